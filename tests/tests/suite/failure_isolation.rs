//! A corpus of real bad files next to the good example plugins: each bad one
//! is rejected with one clear line naming the file, the plugin (when known)
//! and the cause, while every unrelated good plugin still loads.

use agent_host::Stage;
use agent_host_tests::*;

#[test]
fn every_bad_file_fails_alone_and_every_good_plugin_loads() {
    let mut files = examples();
    for feature in [
        "bad-semver",
        "bad-name",
        "huge-manifest",
        "missing-dep",
        "unmet-dep",
        "cycle-a",
        "cycle-b",
        "cycle-x",
        "cycle-y",
        "cycle-z",
        "on-load-fails",
        "on-load-panics",
        "service-fails",
        "depends-on-failed",
        "foreign-abi",
        "foreign-layout",
        "manifest-panics",
        "create-panics",
    ] {
        files.push(fixture(feature));
    }
    files.push(not_a_plugin());
    let dir = folder_with(&files);
    std::fs::write(dir.path().join(format!("empty.{EXT}")), b"").expect("write");
    std::fs::write(
        dir.path().join(format!("random.{EXT}")),
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<u8>>(),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("README.txt"),
        b"not a plugin, not even a library name",
    )
    .expect("write");
    // A second copy of a good plugin: both copies are refused.
    add_as(dir.path(), &fixture(""), &format!("fixture-one.{EXT}"));
    add_as(dir.path(), &fixture(""), &format!("fixture-two.{EXT}"));

    let (host, report) = load(dir.path());
    let lines: Vec<String> = report.failures.iter().map(ToString::to_string).collect();
    let all = lines.join("\n");

    for good in [
        "http-client",
        "geolocation",
        "weather",
        "sentiment",
        "database",
        "notes",
    ] {
        assert!(
            report.loaded(good),
            "{good} should load despite the bad files:\n{all}"
        );
    }
    assert_eq!(report.loaded.len(), 6, "only the good plugins load:\n{all}");

    let expect = |file: &str, plugin: Option<&str>, stage: Stage, cause: &str| {
        let failure = report
            .failures
            .iter()
            .find(|f| {
                f.file
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy() == file)
            })
            .unwrap_or_else(|| panic!("no failure line for {file}:\n{all}"));
        assert_eq!(failure.plugin.as_deref(), plugin, "{failure}");
        assert_eq!(failure.stage(), stage, "{failure}");
        assert!(
            failure.cause().contains(cause),
            "'{failure}' should say '{cause}'"
        );
        let line = failure.to_string();
        assert!(!line.contains('\n'), "one line: {line}");
        assert!(line.contains(file), "the line names the file: {line}");
        if let Some(plugin) = plugin {
            assert!(
                line.contains(&format!("plugin '{plugin}'")),
                "names the plugin: {line}"
            );
        }
    };
    expect(
        &format!("empty.{EXT}"),
        None,
        Stage::Open,
        "the file is empty",
    );
    expect(
        &format!("random.{EXT}"),
        None,
        Stage::Open,
        "not a shared library: its first bytes are not an object file header",
    );
    expect(
        &format!("not-a-plugin.{EXT}"),
        None,
        Stage::Open,
        "not an agent-host plugin",
    );
    expect(
        &format!("foreign-abi.{EXT}"),
        None,
        Stage::Open,
        "built against plugin ABI 2.0.0",
    );
    expect(
        &format!("foreign-layout.{EXT}"),
        None,
        Stage::Open,
        "incompatible plugin ABI layout",
    );
    expect(
        &format!("manifest-panics.{EXT}"),
        None,
        Stage::Open,
        "the plugin builder panics",
    );
    expect(
        &format!("huge-manifest.{EXT}"),
        Some("huge"),
        Stage::Manifest,
        "manifest field `description`: 10485760 bytes, over the limit of 4096",
    );
    expect(
        &format!("bad-semver.{EXT}"),
        Some("bad-semver"),
        Stage::Manifest,
        "not a semantic version",
    );
    expect(
        &format!("bad-name.{EXT}"),
        Some("Bad_Name"),
        Stage::Manifest,
        "not a valid plugin name",
    );
    expect(
        &format!("missing-dep.{EXT}"),
        Some("needs-missing"),
        Stage::Dependencies,
        "missing dependency 'no-such-plugin@^1'",
    );
    expect(
        &format!("unmet-dep.{EXT}"),
        Some("needs-new-geo"),
        Stage::Dependencies,
        "has version 1.0.0",
    );
    expect(
        &format!("cycle-a.{EXT}"),
        Some("cycle-a"),
        Stage::Dependencies,
        "dependency cycle: cycle-a -> cycle-b -> cycle-a",
    );
    expect(
        &format!("cycle-b.{EXT}"),
        Some("cycle-b"),
        Stage::Dependencies,
        "part of the dependency cycle reported for plugin 'cycle-a'",
    );
    expect(
        &format!("cycle-x.{EXT}"),
        Some("cycle-x"),
        Stage::Dependencies,
        "dependency cycle: cycle-x -> cycle-y -> cycle-z -> cycle-x",
    );
    for member in ["cycle-y", "cycle-z"] {
        expect(
            &format!("{member}.{EXT}"),
            Some(member),
            Stage::Dependencies,
            "part of the dependency cycle reported for plugin 'cycle-x'",
        );
    }
    expect(
        &format!("create-panics.{EXT}"),
        Some("create-panics"),
        Stage::Create,
        "panics on create",
    );
    expect(
        &format!("on-load-fails.{EXT}"),
        Some("on-load-fails"),
        Stage::OnLoad,
        "the database is unreachable",
    );
    expect(
        &format!("on-load-panics.{EXT}"),
        Some("on-load-panics"),
        Stage::OnLoad,
        "panicked at",
    );
    expect(
        &format!("service-fails.{EXT}"),
        Some("service-fails"),
        Stage::StartService,
        "service 'broken' failed to start",
    );
    expect(
        &format!("depends-on-failed.{EXT}"),
        Some("after-on-load-fails"),
        Stage::Dependencies,
        "skipped because its dependency 'on-load-fails' failed to load",
    );
    expect(
        &format!("fixture-one.{EXT}"),
        Some("fixture"),
        Stage::Duplicate,
        "duplicate plugin name (found in ",
    );
    expect(
        &format!("fixture-two.{EXT}"),
        Some("fixture"),
        Stage::Duplicate,
        "fixture-one",
    );
    assert!(
        !report
            .failures
            .iter()
            .any(|f| f.file.ends_with("README.txt")),
        "files without the library extension are ignored"
    );
    assert_eq!(
        report.failures.len(),
        23,
        "exactly the bad files fail:\n{all}"
    );

    // The host still serves with the good plugins.
    let services: Vec<agent_host::ServiceStatus> = host
        .statuses()
        .into_iter()
        .flat_map(|status| status.services)
        .collect();
    assert!(services
        .iter()
        .any(|service| service.name == "geolocation" && service.running));
    assert!(
        !services.iter().any(|service| service.name == "fine"),
        "a plugin whose second service failed keeps none of its services"
    );
}

#[test]
fn the_layout_report_is_condensed_with_the_full_text_kept_for_verbose() {
    let (_host, report, _dir) = load_files(&[fixture("foreign-layout")]);
    let failure = &report.failures[0];
    assert!(
        failure.cause().len() < 400,
        "one readable line: {}",
        failure.cause()
    );
    let detail = failure.detail().expect("the full report is kept");
    assert!(
        detail.lines().count() > 10,
        "the full abi_stable report: {detail}"
    );
}

#[test]
fn a_plugin_built_with_a_newer_sdk_is_refused_naming_it_and_both_versions() {
    let (host, report, _dir) = load_files(&[fixture("newer-sdk"), fixture("")]);
    let failure = report
        .failures
        .iter()
        .find(|f| f.file.ends_with(format!("newer-sdk.{EXT}")))
        .expect("the newer plugin fails");
    assert_eq!(failure.stage(), Stage::Open);
    let line = failure.to_string();
    assert!(
        line.contains("plugin 'newer-sdk' was built with agent-host-plugin-sdk 0.9.0")
            && line.contains(&format!(
                "this host (agent-host-plugin-sdk {})",
                agent_host_plugin_sdk::SDK_VERSION
            ))
            && line.contains("does not know: retries"),
        "{line}"
    );
    assert_eq!(line.matches("newer-sdk'").count(), 1, "named once: {line}");
    assert!(report.loaded("fixture"), "the other plugin still loads");
    drop(host);
}
