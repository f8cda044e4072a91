//! The dependency rules, on names and versions alone.

use super::*;

fn candidate(name: &str, version: &str, deps: &[&str], optional: &[&str]) -> Candidate {
    let mut dependencies: Vec<Dependency> = deps
        .iter()
        .map(|d| Dependency::parse(d, false).expect("dep"))
        .collect();
    dependencies.extend(
        optional
            .iter()
            .map(|d| Dependency::parse(d, true).expect("dep")),
    );
    Candidate {
        name: name.into(),
        version: Version::parse(version).expect("version"),
        dependencies,
    }
}

fn names(candidates: &[Candidate], resolution: &Resolution) -> Vec<Vec<String>> {
    resolution
        .levels
        .iter()
        .map(|l| l.iter().map(|&i| candidates[i].name.clone()).collect())
        .collect()
}

fn failure_of<'a>(
    candidates: &[Candidate],
    r: &'a Resolution,
    name: &str,
) -> Option<&'a Unresolved> {
    r.failed
        .iter()
        .find(|(i, _)| candidates[*i].name == name)
        .map(|(_, f)| f)
}

#[test]
fn dependencies_come_first_and_independents_share_a_level() {
    let c = vec![
        candidate(
            "weather",
            "1.0.0",
            &["http-client@^1.2", "geolocation"],
            &[],
        ),
        candidate("http-client", "1.3.0", &[], &[]),
        candidate("geolocation", "1.0.0", &[], &[]),
    ];
    let r = resolve(&c, &BTreeSet::new());
    assert!(r.failed.is_empty());
    assert_eq!(
        names(&c, &r),
        vec![vec!["http-client", "geolocation"], vec!["weather"]]
    );
}

#[test]
fn missing_and_unmet_dependencies_fail_and_their_dependents_are_skipped() {
    let c = vec![
        candidate("a", "1.0.0", &["nothere"], &[]),
        candidate("b", "1.0.0", &["c@^2"], &[]),
        candidate("c", "1.5.0", &[], &[]),
        candidate("d", "1.0.0", &["a"], &[]),
    ];
    let r = resolve(&c, &BTreeSet::new());
    assert!(matches!(
        failure_of(&c, &r, "a"),
        Some(Unresolved::Missing { .. })
    ));
    assert!(
        matches!(failure_of(&c, &r, "b"), Some(Unresolved::Unmet { found, .. }) if found.to_string() == "1.5.0")
    );
    assert_eq!(
        failure_of(&c, &r, "d"),
        Some(&Unresolved::DependencyFailed {
            dependency: "a".into()
        })
    );
    assert_eq!(names(&c, &r), vec![vec!["c"]]);
}

#[test]
fn a_cycle_away_from_the_first_plugin_is_reported_once_as_a_path() {
    let c = vec![
        candidate("first", "1.0.0", &[], &[]),
        candidate("x", "1.0.0", &["y"], &[]),
        candidate("y", "1.0.0", &["z"], &[]),
        candidate("z", "1.0.0", &["x"], &[]),
        candidate("after", "1.0.0", &["z"], &[]),
    ];
    let r = resolve(&c, &BTreeSet::new());
    assert_eq!(
        failure_of(&c, &r, "x"),
        Some(&Unresolved::Cycle {
            path: vec!["x".into(), "y".into(), "z".into(), "x".into()]
        })
    );
    assert_eq!(
        failure_of(&c, &r, "x").map(ToString::to_string).as_deref(),
        Some("dependency cycle: x -> y -> z -> x")
    );
    for name in ["y", "z"] {
        assert_eq!(
            failure_of(&c, &r, name),
            Some(&Unresolved::InCycle {
                reported_for: "x".into()
            }),
            "{name}"
        );
    }
    assert_eq!(
        failure_of(&c, &r, "after"),
        Some(&Unresolved::DependencyFailed {
            dependency: "z".into()
        })
    );
    assert_eq!(names(&c, &r), vec![vec!["first"]]);
}

#[test]
fn two_plugin_cycle_is_named() {
    let c = vec![
        candidate("a", "1.0.0", &["b"], &[]),
        candidate("b", "1.0.0", &["a"], &[]),
    ];
    let r = resolve(&c, &BTreeSet::new());
    assert_eq!(r.failed.len(), 2);
    assert!(r.levels.is_empty());
}

#[test]
fn optional_dependencies_order_when_present_and_are_dropped_otherwise() {
    let c = vec![
        candidate("app", "1.0.0", &[], &["cache", "absent", "old@^2"]),
        candidate("cache", "1.0.0", &[], &[]),
        candidate("old", "1.0.0", &[], &[]),
    ];
    let r = resolve(&c, &BTreeSet::new());
    assert!(r.failed.is_empty());
    assert_eq!(names(&c, &r), vec![vec!["cache", "old"], vec!["app"]]);
    assert_eq!(r.ignored_optional.len(), 1);
}

#[test]
fn dependents_of_plugins_that_failed_earlier_are_skipped_not_missing() {
    let c = vec![candidate("app", "1.0.0", &["broken"], &[])];
    let failed: BTreeSet<String> = ["broken".to_string()].into();
    let r = resolve(&c, &failed);
    assert_eq!(
        failure_of(&c, &r, "app"),
        Some(&Unresolved::DependencyFailed {
            dependency: "broken".into()
        })
    );
}

#[test]
fn a_long_cycle_is_printed_once() {
    let n = 1000;
    let name = |i: usize| format!("p{i:04}");
    let c: Vec<Candidate> = (0..n)
        .map(|i| candidate(&name(i), "1.0.0", &[&name((i + 1) % n)], &[]))
        .collect();
    let r = resolve(&c, &BTreeSet::new());
    let lines: Vec<String> = r.failed.iter().map(|(_, f)| f.to_string()).collect();
    assert_eq!(lines.len(), n);
    let long: Vec<&String> = lines.iter().filter(|l| l.len() > 200).collect();
    assert_eq!(long.len(), 1, "one line carries the path");
    assert!(long[0].starts_with("dependency cycle: p0000 -> p0001 -> p0002"));
    assert!(long[0].ends_with("p0999 -> p0000"));
    assert!(lines
        .iter()
        .filter(|l| l.len() <= 200)
        .all(|l| l == "part of the dependency cycle reported for plugin 'p0000'"));
}

#[test]
fn a_replacement_is_checked_against_its_dependencies_and_dependents() {
    let loaded = vec![
        candidate("store", "1.2.0", &[], &[]),
        candidate("app", "1.0.0", &["store@^1"], &[]),
        candidate("tool", "1.0.0", &["app"], &[]),
    ];
    let fits = candidate("store", "1.3.0", &[], &[]);
    assert_eq!(check_replacement(&loaded, &fits), Ok(()));
    assert_eq!(
        check_replacement(&loaded, &candidate("store", "2.0.0", &[], &[])),
        Err(Misfit::BreaksDependent {
            dependent: "app".into(),
            requirement: "store@^1".into(),
            version: Version::new(2, 0, 0),
        })
    );
    assert_eq!(
        check_replacement(&loaded, &candidate("store", "1.3.0", &["tool"], &[]))
            .map_err(|e| e.to_string()),
        Err("dependency cycle: store -> tool -> app -> store".to_string())
    );
    assert_eq!(
        check_replacement(&loaded, &candidate("app", "1.1.0", &["gone"], &[])),
        Err(Misfit::Missing {
            dependency: "gone".into()
        })
    );
    assert_eq!(
        check_replacement(&loaded, &candidate("app", "1.1.0", &["store@^2"], &[])),
        Err(Misfit::Unmet {
            dependency: "store@^2".into(),
            found: Version::new(1, 2, 0),
        })
    );
    assert_eq!(
        check_replacement(
            &loaded,
            &candidate("app", "1.1.0", &[], &["gone", "store@^2"])
        ),
        Ok(()),
        "optional dependencies that are absent or unmet are left out"
    );
}

#[test]
fn dependents_follow_required_dependencies_only() {
    let loaded = vec![
        candidate("store", "1.0.0", &[], &[]),
        candidate("app", "1.0.0", &["store"], &[]),
        candidate("tool", "1.0.0", &["app"], &[]),
        candidate("extra", "1.0.0", &[], &["store"]),
        candidate("alone", "1.0.0", &[], &[]),
    ];
    assert_eq!(
        dependents(&loaded, &["store".to_string()]),
        vec!["app", "tool"]
    );
    assert!(dependents(&loaded, &["alone".to_string()]).is_empty());
}
