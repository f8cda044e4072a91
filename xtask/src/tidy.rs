//! Tidy checks of the host's structure, run by `cargo test`: the modules of
//! `host/src` form layers, and an import may only look down (or sideways,
//! within a layer, without closing a circle).
//!
//! The layers are [`HOST_LAYERS`], from the top. An import is any path
//! `crate::module` in the code of a file (comments and test code left out),
//! and a name the crate root re-exports counts as an import of the module
//! it comes from. ARCHITECTURE.md draws the same table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The host's modules by layer, from the top: a module may import modules
/// of its own layer or of the layers below it, never of a layer above.
pub const HOST_LAYERS: &[(&str, &[&str])] = &[
    ("front ends", &["cli", "http", "request"]),
    ("cluster", &["cluster"]),
    ("facade", &["host", "testing", "bench_support"]),
    ("flows", &["lifecycle", "reload", "pipeline"]),
    ("registry", &["registry"]),
    ("seam", &["plugin"]),
    ("engines", &["load", "isolation"]),
    (
        "leaves",
        &[
            "call",
            "config",
            "current_call",
            "dependencies",
            "fault_log",
            "log_limit",
            "metrics",
            "permissions",
            "plugin_stats",
            "prefetch",
            "regular_file",
            "shared_cause",
            "sys",
            "triggers",
            "trust",
            "watchdog",
            "worker_status",
        ],
    ),
];

/// `cargo xtask tidy`: prints the imports of `host/src` that break the
/// layers or the parts of `isolation`; an error when there is one.
pub fn tidy_command() -> Result<(), String> {
    let src = crate::workspace_root().join("host").join("src");
    let cannot_read = |e: std::io::Error| format!("cannot read {}: {e}", src.display());
    let layers = violations(&src).map_err(cannot_read)?;
    let parts = isolation_violations(&src).map_err(cannot_read)?;
    for violation in &layers {
        println!("{violation}");
    }
    for (file, path) in &parts {
        println!("{file}: imports `{path}`, which ISOLATION_PARTS forbids this part of isolation");
    }
    match layers.len() + parts.len() {
        0 => Ok(()),
        n => Err(format!("{n} import(s) break the layers of the host")),
    }
}

/// The parts of `isolation`, and what each may import of the crate beyond
/// itself: the wire format knows neither side nor the host (only the
/// leaves); the worker's side and the engine (the host's side) never import
/// each other.
pub const ISOLATION_PARTS: &[(&str, &[&str])] =
    &[("wire", &[]), ("worker", &["wire"]), ("engine", &["wire"])];

/// One import that breaks the layering.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// The file, relative to `host/src`.
    pub file: String,
    /// The module it belongs to.
    pub from: String,
    /// The module it imports.
    pub to: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: module `{}` imports `{}`, {}",
            self.file,
            self.from,
            self.to,
            match (layer_of(&self.from), layer_of(&self.to)) {
                (Some(from), Some(to)) if to < from => format!(
                    "a layer above it ({} over {})",
                    HOST_LAYERS[to].0, HOST_LAYERS[from].0
                ),
                (None, _) => "but it is in no layer of HOST_LAYERS".to_string(),
                (_, None) => "which is in no layer of HOST_LAYERS".to_string(),
                _ => "and closes a circle".to_string(),
            }
        )
    }
}

fn layer_of(module: &str) -> Option<usize> {
    HOST_LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// The module-level imports of the crate in `src`: (file, from, to).
pub fn imports(src: &Path) -> std::io::Result<Vec<(String, String, String)>> {
    let reexports = reexports(&std::fs::read_to_string(src.join("lib.rs"))?);
    let test_only = test_only_files(src)?;
    let mut found = Vec::new();
    for file in rust_files(src)? {
        let rel = file
            .strip_prefix(src)
            .unwrap_or(&file)
            .to_string_lossy()
            .replace('\\', "/");
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if rel == "lib.rs"
            || rel == "main.rs"
            || name == "tests.rs"
            || name.ends_with("_tests.rs")
            || test_only.contains(&file)
        {
            continue;
        }
        let from = rel
            .split('/')
            .next()
            .unwrap_or("")
            .trim_end_matches(".rs")
            .to_string();
        let code = code_of(&std::fs::read_to_string(&file)?);
        for target in crate_paths(&code) {
            let to = if target.starts_with(|c: char| c.is_ascii_uppercase()) {
                match reexports.get(&target) {
                    Some(module) => module.clone(),
                    None => continue,
                }
            } else {
                target
            };
            if to != from {
                found.push((rel.clone(), from.clone(), to));
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// The imports of `src` that run up a layer, or sideways into a circle.
pub fn violations(src: &Path) -> std::io::Result<Vec<Violation>> {
    let imports = imports(src)?;
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut violations = Vec::new();
    for (file, from, to) in &imports {
        match (layer_of(from), layer_of(to)) {
            (Some(a), Some(b)) if b >= a => {
                graph.entry(from).or_default().insert(to);
            }
            _ => violations.push(Violation {
                file: file.clone(),
                from: from.clone(),
                to: to.clone(),
            }),
        }
    }
    for (file, from, to) in &imports {
        if reaches(&graph, to, from) && layer_of(from) == layer_of(to) {
            violations.push(Violation {
                file: file.clone(),
                from: from.clone(),
                to: to.clone(),
            });
        }
    }
    violations.sort();
    violations.dedup();
    Ok(violations)
}

/// The imports between the parts of `isolation` that [`ISOLATION_PARTS`]
/// forbids, and the wire's imports of anything above the leaves: (file,
/// the import).
pub fn isolation_violations(src: &Path) -> std::io::Result<Vec<(String, String)>> {
    let leaves = HOST_LAYERS.last().map_or(&[][..], |(_, modules)| *modules);
    let mut found = Vec::new();
    for file in rust_files(&src.join("isolation"))? {
        let rel = file
            .strip_prefix(src)
            .unwrap_or(&file)
            .to_string_lossy()
            .replace('\\', "/");
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let segments: Vec<&str> = rel.trim_end_matches(".rs").split('/').collect();
        let Some(&part) = segments.get(1) else {
            continue;
        };
        let Some((_, may)) = ISOLATION_PARTS.iter().find(|(p, _)| *p == part) else {
            continue;
        };
        // The module path of the file, for `super::` paths.
        let mut module: Vec<&str> = segments.clone();
        if module.last() == Some(&"mod") {
            module.pop();
        }
        let code = code_of(&std::fs::read_to_string(&file)?);
        for path in module_paths(&code, &module) {
            let target_part = match path.as_slice() {
                [first, second, ..] if first == "isolation" => second.as_str(),
                [first, ..] if first == "isolation" => continue,
                [first, ..] => {
                    if part == "wire" && !leaves.contains(&first.as_str()) {
                        found.push((rel.clone(), path.join("::")));
                    }
                    continue;
                }
                [] => continue,
            };
            let allowed = target_part == part
                || may.contains(&target_part)
                || !ISOLATION_PARTS.iter().any(|(p, _)| *p == target_part);
            if !allowed {
                found.push((rel.clone(), path.join("::")));
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// Every `crate::` or `super::` path in `code` of a file whose module path
/// is `module`, resolved to a path from the crate root (the first two
/// segments at most).
fn module_paths(code: &str, module: &[&str]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut at = 0;
    while at < code.len() {
        let rest = &code[at..];
        let (start, mut base): (usize, Vec<String>) =
            match (rest.find("crate::"), rest.find("super::")) {
                (None, None) => break,
                (Some(c), Some(s)) if s < c => (s, module.iter().map(|m| m.to_string()).collect()),
                (None, Some(s)) => (s, module.iter().map(|m| m.to_string()).collect()),
                (Some(c), _) => (c, Vec::new()),
            };
        let begin = at + start;
        at = begin + 1;
        if begin > 0
            && (bytes[begin - 1].is_ascii_alphanumeric()
                || bytes[begin - 1] == b'_'
                || bytes[begin - 1] == b':')
        {
            continue;
        }
        let mut path = &code[begin..];
        if let Some(after) = path.strip_prefix("crate::") {
            path = after;
        } else {
            while let Some(after) = path.strip_prefix("super::") {
                base.pop();
                path = after;
            }
        }
        let segments: Vec<String> = path
            .split("::")
            .take(2)
            .map(|s| {
                s.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|s| !s.is_empty() && s.starts_with(|c: char| c.is_ascii_lowercase()))
            .collect();
        base.extend(segments);
        base.truncate(2);
        found.push(base);
    }
    found
}

/// Whether `to` is reachable from `from` in `graph`.
fn reaches(graph: &BTreeMap<&str, BTreeSet<&str>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(at) = stack.pop() {
        if at == to {
            return true;
        }
        if seen.insert(at) {
            stack.extend(graph.get(at).into_iter().flatten().copied());
        }
    }
    false
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let path = entry?.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The files declared as modules under `#[cfg(test)]`.
fn test_only_files(src: &Path) -> std::io::Result<BTreeSet<PathBuf>> {
    let mut test_only = BTreeSet::new();
    for file in rust_files(src)? {
        let text = std::fs::read_to_string(&file)?;
        let folder = match file.file_name().and_then(|n| n.to_str()) {
            Some("mod.rs" | "lib.rs" | "main.rs") => file.parent().map(Path::to_path_buf),
            _ => Some(file.with_extension("")),
        };
        let Some(folder) = folder else { continue };
        let mut lines = text.lines().map(str::trim).peekable();
        while let Some(line) = lines.next() {
            if line != "#[cfg(test)]" {
                continue;
            }
            let Some(next) = lines.peek() else { break };
            let declared = next
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub(super) ")
                .trim_start_matches("pub ");
            if let Some(name) = declared
                .strip_prefix("mod ")
                .and_then(|rest| rest.strip_suffix(';'))
            {
                test_only.insert(folder.join(format!("{name}.rs")));
                test_only.insert(folder.join(name).join("mod.rs"));
            }
        }
    }
    Ok(test_only)
}

/// The text of a file without its comments and without the test module at
/// its end (`#[cfg(test)] mod tests { ... }`).
fn code_of(text: &str) -> String {
    let mut code = String::with_capacity(text.len());
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim().starts_with("mod ") && next.trim().ends_with('{'))
        {
            break;
        }
        let without_comment = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        code.push_str(without_comment);
        code.push('\n');
    }
    code
}

/// The first segment after every `crate::` in `code`, and each name of a
/// `crate::{...}` group.
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            found.extend(
                group[..end]
                    .split(',')
                    .map(|item| item.trim().split("::").next().unwrap_or("").trim())
                    .filter(|name| !name.is_empty())
                    .map(str::to_string),
            );
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.push(name);
        }
    }
    found
}

/// What the crate root re-exports: name -> the module it comes from.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let code = code_of(lib);
    for statement in code.split(';') {
        let statement = statement.trim();
        let Some(path) = statement.strip_prefix("pub use crate::") else {
            continue;
        };
        let module = path.split("::").next().unwrap_or("").trim().to_string();
        let names = match (path.find('{'), path.rfind('}')) {
            (Some(open), Some(close)) => path[open + 1..close].to_string(),
            _ => path.rsplit("::").next().unwrap_or("").to_string(),
        };
        for name in names.split(',') {
            let name = name.trim().rsplit("::").next().unwrap_or("").trim();
            if !name.is_empty() {
                map.insert(name.to_string(), module.clone());
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_src() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("host")
            .join("src")
    }

    /// Fails with every finding, one a line, under `what`.
    fn assert_none(findings: Vec<String>, what: &str) {
        assert!(findings.is_empty(), "{what}:\n{}", findings.join("\n"));
    }

    #[test]
    fn host_imports_only_look_down_and_close_no_circle() {
        let violations = violations(&host_src()).expect("read host/src");
        assert_none(
            violations.iter().map(ToString::to_string).collect(),
            "imports that break the layers of xtask/src/tidy.rs HOST_LAYERS",
        );
    }

    #[test]
    fn the_parts_of_isolation_keep_to_themselves() {
        let found = isolation_violations(&host_src()).expect("read host/src/isolation");
        assert_none(
            found
                .iter()
                .map(|(file, path)| format!("{file}: {path}"))
                .collect(),
            "imports between the parts of isolation that xtask/src/tidy.rs ISOLATION_PARTS forbids",
        );
    }

    #[test]
    fn the_isolation_rule_reads_super_paths() {
        let paths = module_paths(
            "use super::super::engine::spawn;\nuse crate::isolation::wire::x;\nuse super::y;\nuse crate::plugin::Backend;",
            &["isolation", "worker", "sandbox"],
        );
        assert_eq!(
            paths,
            vec![
                vec!["isolation".to_string(), "engine".to_string()],
                vec!["isolation".to_string(), "wire".to_string()],
                vec!["isolation".to_string(), "worker".to_string()],
                vec!["plugin".to_string(), "Backend".to_string()]
                    .into_iter()
                    .take(1)
                    .collect(),
            ]
        );
    }

    #[test]
    fn every_module_of_the_host_has_a_layer() {
        let src = host_src();
        let mut missing = Vec::new();
        for entry in std::fs::read_dir(&src).expect("read host/src") {
            let path = entry.expect("entry").path();
            let name = path
                .file_stem()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            let is_module = path.is_dir() || path.extension().is_some_and(|e| e == "rs");
            let test_file = name == "tests" || name.ends_with("_tests");
            if is_module
                && !test_file
                && name != "lib"
                && name != "main"
                && layer_of(&name).is_none()
            {
                missing.push(name);
            }
        }
        missing.sort();
        missing.dedup();
        assert!(missing.is_empty(), "modules with no layer: {missing:?}");
    }

    #[test]
    fn an_import_up_a_layer_is_caught() {
        let dir = tempdir();
        std::fs::write(dir.join("lib.rs"), "pub use crate::host::PluginHost;\n").expect("lib");
        std::fs::write(
            dir.join("plugin.rs"),
            "// crate::host in a comment is no import\nuse crate::load::x;\nfn f() { crate::PluginHost::new(); }\n",
        )
        .expect("plugin");
        std::fs::write(dir.join("load.rs"), "use crate::plugin::y;\n").expect("load");
        std::fs::write(dir.join("host.rs"), "use crate::plugin::z;\n").expect("host");
        let found: Vec<String> = violations(&dir)
            .expect("violations")
            .iter()
            .map(|v| format!("{} {}->{}", v.file, v.from, v.to))
            .collect();
        assert_eq!(
            found,
            vec!["load.rs load->plugin", "plugin.rs plugin->host"]
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_circle_within_a_layer_is_caught_and_test_code_is_not_read() {
        let dir = tempdir();
        std::fs::write(dir.join("lib.rs"), "#[cfg(test)]\nmod checks;\n").expect("lib");
        std::fs::write(dir.join("cli.rs"), "use crate::http::a;\n").expect("cli");
        std::fs::write(
            dir.join("http.rs"),
            "use crate::cli::b;\n#[cfg(test)]\nmod tests {\n    use crate::host::c;\n}\n",
        )
        .expect("http");
        std::fs::write(dir.join("checks.rs"), "use crate::host::d;\n").expect("checks");
        let found: Vec<String> = violations(&dir)
            .expect("violations")
            .iter()
            .map(|v| format!("{}->{}", v.from, v.to))
            .collect();
        assert_eq!(found, vec!["cli->http", "http->cli"]);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tidy-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
