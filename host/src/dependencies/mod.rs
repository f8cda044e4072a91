//! Dependency resolution: which plugins can load, and in what order.
//!
//! Pure logic over names, versions and dependencies, so every rule is tested
//! without files. Cycles are found with `toposort-scc`, through a virtual root
//! vertex with an edge to every plugin: without it, a cycle not reachable from
//! vertex 0 is missed (DESIGN fact 10).

use agent_host_plugin_sdk::manifest::Dependency;
use semver::Version;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use toposort_scc::IndexGraph;

/// A plugin as the resolver sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The plugin's name (unique among candidates).
    pub name: String,
    /// The plugin's version.
    pub version: Version,
    /// Required and optional dependencies.
    pub dependencies: Vec<Dependency>,
}

/// Why a candidate cannot load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// A required dependency is not among the plugins.
    Missing {
        /// The dependency as written.
        dependency: String,
    },
    /// A required dependency is present in a version the requirement rejects.
    Unmet {
        /// The dependency as written.
        dependency: String,
        /// The version that is present.
        found: Version,
    },
    /// The plugin is part of a dependency cycle.
    Cycle {
        /// Every member of the cycle, sorted.
        members: Vec<String>,
    },
    /// A required dependency cannot load itself.
    DependencyFailed {
        /// The dependency that failed.
        dependency: String,
    },
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unresolved::Missing { dependency } => {
                write!(
                    f,
                    "missing dependency '{dependency}': no plugin of that name is present"
                )
            }
            Unresolved::Unmet { dependency, found } => write!(
                f,
                "unmet dependency '{dependency}': the plugin present has version {found}"
            ),
            Unresolved::Cycle { members } => {
                write!(f, "dependency cycle between {}", members.join(", "))
            }
            Unresolved::DependencyFailed { dependency } => {
                write!(
                    f,
                    "skipped because its dependency '{dependency}' failed to load"
                )
            }
        }
    }
}

/// The outcome of resolution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Loadable candidates grouped in levels: every plugin's dependencies are
    /// in earlier levels, so the plugins of one level can load in parallel.
    pub levels: Vec<Vec<usize>>,
    /// Candidates that cannot load, with the reason.
    pub failed: Vec<(usize, Unresolved)>,
    /// Optional dependencies present in a version the requirement rejects:
    /// ignored, with a warning.
    pub ignored_optional: Vec<(usize, String)>,
    /// For each candidate, the candidates it waits for (required and present optional ones).
    pub edges: Vec<Vec<usize>>,
}

impl Resolution {
    /// Loadable candidates in load order.
    pub fn order(&self) -> impl Iterator<Item = usize> + '_ {
        self.levels.iter().flatten().copied()
    }
}

/// Resolves `candidates`, given the names of plugins already known to have
/// failed before resolution (their dependents are skipped, not reported missing).
pub fn resolve(candidates: &[Candidate], failed_names: &BTreeSet<String>) -> Resolution {
    let index: HashMap<&str, usize> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let mut failed: Vec<Option<Unresolved>> = vec![None; candidates.len()];
    let mut ignored_optional = Vec::new();
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); candidates.len()];

    for (i, candidate) in candidates.iter().enumerate() {
        for dependency in &candidate.dependencies {
            let written = dependency.to_string();
            match index.get(dependency.name.as_str()) {
                Some(&d) if dependency.requirement.matches(&candidates[d].version) => {
                    edges[i].push(d);
                }
                Some(&d) if dependency.optional => {
                    ignored_optional.push((
                        i,
                        format!(
                            "optional dependency '{written}' ignored: the plugin present has version {}",
                            candidates[d].version
                        ),
                    ));
                }
                Some(&d) => {
                    failed[i].get_or_insert(Unresolved::Unmet {
                        dependency: written,
                        found: candidates[d].version.clone(),
                    });
                }
                None if dependency.optional => {}
                None if failed_names.contains(&dependency.name) => {
                    failed[i].get_or_insert(Unresolved::DependencyFailed {
                        dependency: dependency.name.clone(),
                    });
                }
                None => {
                    failed[i].get_or_insert(Unresolved::Missing {
                        dependency: written,
                    });
                }
            }
        }
    }

    // Vertex 0 is a virtual root with an edge to every plugin; plugin i is
    // vertex i + 1, and an edge runs from a dependency to its dependent.
    let mut graph = IndexGraph::with_vertices(candidates.len() + 1);
    for (i, deps) in edges.iter().enumerate() {
        graph.add_edge(0, i + 1);
        for &d in deps {
            graph.add_edge(d + 1, i + 1);
        }
    }
    if let Err(components) = graph.toposort_or_scc() {
        for component in components {
            let members: Vec<usize> = component
                .into_iter()
                .filter(|&v| v != 0)
                .map(|v| v - 1)
                .collect();
            let mut names: Vec<String> = members
                .iter()
                .map(|&m| candidates[m].name.clone())
                .collect();
            names.sort();
            for m in members {
                failed[m] = Some(Unresolved::Cycle {
                    members: names.clone(),
                });
            }
        }
    }

    // Skip the dependents of failed plugins, to a fixed point. Optional
    // dependencies that failed are simply dropped.
    loop {
        let mut changed = false;
        for (i, candidate) in candidates.iter().enumerate() {
            if failed[i].is_some() {
                continue;
            }
            let mut kept = Vec::with_capacity(edges[i].len());
            for &d in &edges[i] {
                if failed[d].is_none() {
                    kept.push(d);
                    continue;
                }
                let optional = candidate
                    .dependencies
                    .iter()
                    .any(|dep| dep.optional && dep.name == candidates[d].name);
                if !optional {
                    failed[i] = Some(Unresolved::DependencyFailed {
                        dependency: candidates[d].name.clone(),
                    });
                    changed = true;
                    break;
                }
            }
            if failed[i].is_none() {
                edges[i] = kept;
            }
        }
        if !changed {
            break;
        }
    }

    // Levels: a plugin's level is one more than its deepest dependency's.
    let mut level: Vec<Option<usize>> = vec![None; candidates.len()];
    let mut levels: Vec<Vec<usize>> = Vec::new();
    let mut remaining: Vec<usize> = (0..candidates.len())
        .filter(|&i| failed[i].is_none())
        .collect();
    while !remaining.is_empty() {
        let (ready, waiting): (Vec<usize>, Vec<usize>) = remaining
            .iter()
            .partition(|&&i| edges[i].iter().all(|&d| level[d].is_some()));
        if ready.is_empty() {
            // Unreachable: cycles were removed above. Fail safe rather than loop.
            for i in waiting {
                failed[i] = Some(Unresolved::Cycle {
                    members: vec![candidates[i].name.clone()],
                });
            }
            break;
        }
        for &i in &ready {
            level[i] = Some(levels.len());
        }
        levels.push(ready);
        remaining = waiting;
    }

    Resolution {
        levels,
        failed: failed
            .into_iter()
            .enumerate()
            .filter_map(|(i, f)| f.map(|f| (i, f)))
            .collect(),
        ignored_optional,
        edges,
    }
}

#[cfg(test)]
mod tests {
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
    fn a_cycle_away_from_the_first_plugin_is_found_with_its_members() {
        let c = vec![
            candidate("first", "1.0.0", &[], &[]),
            candidate("x", "1.0.0", &["y"], &[]),
            candidate("y", "1.0.0", &["z"], &[]),
            candidate("z", "1.0.0", &["x"], &[]),
            candidate("after", "1.0.0", &["z"], &[]),
        ];
        let r = resolve(&c, &BTreeSet::new());
        for name in ["x", "y", "z"] {
            assert_eq!(
                failure_of(&c, &r, name),
                Some(&Unresolved::Cycle {
                    members: vec!["x".into(), "y".into(), "z".into()]
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
}
