//! Everything the host knows about dependencies between plugins, in one
//! place: the load order in parallel levels, why a plugin cannot load
//! (missing, unmet, a cycle, a failed dependency), the dependents of a
//! plugin, and whether a new build of a loaded plugin still fits among the
//! others. The loader, hot reload and file removal all ask this module.
//!
//! Pure logic over names, versions and parsed dependencies, so every rule is
//! tested without files. Cycles are found with `toposort-scc` (its strongly
//! connected components), through a virtual root vertex with an edge to
//! every plugin: the crate's search starts from vertex 0 and misses a cycle
//! that vertex 0 does not reach. A cycle is reported once, as a path, on the
//! line of its first member; the other members point to that line.

#[cfg(test)]
mod tests;

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
    /// The plugin is the first (by name) of a dependency cycle.
    Cycle {
        /// The cycle as a path from this plugin back to it.
        path: Vec<String>,
    },
    /// The plugin is part of a cycle reported for another plugin.
    InCycle {
        /// The cycle's first member, whose line shows the cycle.
        reported_for: String,
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
            Unresolved::Cycle { path } => {
                write!(f, "dependency cycle: {}", path.join(" -> "))
            }
            Unresolved::InCycle { reported_for } => write!(
                f,
                "part of the dependency cycle reported for plugin '{reported_for}'"
            ),
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

    /// The first required dependency of candidate `i` that is in `failed`
    /// (it failed while starting): `i` must then be skipped. A failed
    /// optional dependency is simply left out.
    pub fn failed_requirement(
        &self,
        candidates: &[Candidate],
        i: usize,
        failed: &BTreeSet<usize>,
    ) -> Option<usize> {
        self.edges[i].iter().copied().find(|d| {
            failed.contains(d)
                && candidates[i]
                    .dependencies
                    .iter()
                    .any(|dep| !dep.optional && dep.name == candidates[*d].name)
        })
    }
}

/// Why a new build of a loaded plugin does not fit among the other loaded
/// plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misfit {
    /// A required dependency is not loaded.
    Missing {
        /// The dependency as written.
        dependency: String,
    },
    /// A required dependency is loaded in a version the requirement rejects.
    Unmet {
        /// The dependency as written.
        dependency: String,
        /// The version loaded.
        found: Version,
    },
    /// The new build's dependencies lead back to it.
    Cycle {
        /// The cycle as a path from the plugin back to it.
        path: Vec<String>,
    },
    /// A loaded plugin's requirement rejects the new version.
    BreaksDependent {
        /// The plugin that depends on the reloaded one.
        dependent: String,
        /// Its requirement as written.
        requirement: String,
        /// The new build's version.
        version: Version,
    },
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misfit::Missing { dependency } => write!(
                f,
                "missing dependency '{dependency}': no plugin of that name is loaded"
            ),
            Misfit::Unmet { dependency, found } => write!(
                f,
                "unmet dependency '{dependency}': the plugin loaded has version {found}"
            ),
            Misfit::Cycle { path } => write!(f, "dependency cycle: {}", path.join(" -> ")),
            Misfit::BreaksDependent {
                dependent,
                requirement,
                version,
            } => write!(
                f,
                "plugin '{dependent}' requires {requirement}, which the new version {version} does not meet"
            ),
        }
    }
}

impl std::error::Error for Misfit {}

/// Checks a new build of a loaded plugin against the other loaded plugins
/// (`loaded` may hold the old build; it is ignored): its dependencies are
/// loaded in versions it accepts and do not lead back to it, and every
/// plugin that depends on it accepts its new version.
pub fn check_replacement(loaded: &[Candidate], new: &Candidate) -> Result<(), Misfit> {
    let others: Vec<&Candidate> = loaded.iter().filter(|c| c.name != new.name).collect();
    let find = |name: &str| others.iter().copied().find(|c| c.name == name);
    for dependency in &new.dependencies {
        match find(&dependency.name) {
            Some(found) if dependency.requirement.matches(&found.version) => {
                if let Some(mut path) = path_to(&others, &found.name, &new.name) {
                    path.insert(0, new.name.clone());
                    return Err(Misfit::Cycle { path });
                }
            }
            Some(found) if !dependency.optional => {
                return Err(Misfit::Unmet {
                    dependency: dependency.to_string(),
                    found: found.version.clone(),
                })
            }
            None if !dependency.optional => {
                return Err(Misfit::Missing {
                    dependency: dependency.to_string(),
                })
            }
            _ => {}
        }
    }
    for dependent in &others {
        for requirement in &dependent.dependencies {
            if requirement.name == new.name && !requirement.requirement.matches(&new.version) {
                return Err(Misfit::BreaksDependent {
                    dependent: dependent.name.clone(),
                    requirement: requirement.to_string(),
                    version: new.version.clone(),
                });
            }
        }
    }
    Ok(())
}

/// A path of dependencies (required or optional) from `from` to `target`
/// among `plugins`, both ends included.
fn path_to(plugins: &[&Candidate], from: &str, target: &str) -> Option<Vec<String>> {
    let mut parent: HashMap<&str, &str> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([from]);
    let mut seen: BTreeSet<&str> = BTreeSet::from([from]);
    while let Some(at) = queue.pop_front() {
        if at == target {
            let mut path = vec![at.to_string()];
            let mut step = at;
            while let Some(&previous) = parent.get(step) {
                path.push(previous.to_string());
                step = previous;
            }
            path.reverse();
            return Some(path);
        }
        let Some(plugin) = plugins.iter().find(|p| p.name == at) else {
            continue;
        };
        for dependency in &plugin.dependencies {
            let next = dependency.name.as_str();
            if seen.insert(next) {
                parent.insert(next, at);
                queue.push_back(next);
            }
        }
    }
    None
}

/// Every plugin of `loaded` that needs one of `names` through a required
/// dependency, directly or through other plugins, in the order of `loaded`.
pub fn dependents(loaded: &[Candidate], names: &[String]) -> Vec<String> {
    let mut doomed: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    loop {
        let before = doomed.len();
        for plugin in loaded {
            if !doomed.contains(plugin.name.as_str())
                && plugin
                    .dependencies
                    .iter()
                    .any(|d| !d.optional && doomed.contains(d.name.as_str()))
            {
                doomed.insert(&plugin.name);
            }
        }
        if doomed.len() == before {
            break;
        }
    }
    loaded
        .iter()
        .filter(|p| doomed.contains(p.name.as_str()) && !names.contains(&p.name))
        .map(|p| p.name.clone())
        .collect()
}

/// The shortest cycle from `start` back to it, following dependency edges
/// among `members` (a strongly connected component, so one exists).
fn cycle_through(start: usize, members: &[usize], edges: &[Vec<usize>]) -> Vec<usize> {
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        for &next in &edges[at] {
            if !members.contains(&next) {
                continue;
            }
            if next == start {
                let mut chain = Vec::new();
                let mut step = at;
                while step != start {
                    chain.push(step);
                    step = parent[&step];
                }
                chain.reverse();
                let mut path = vec![start];
                path.extend(chain);
                path.push(start);
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = parent.entry(next) {
                slot.insert(at);
                queue.push_back(next);
            }
        }
    }
    vec![start]
}

/// Resolves `candidates`, given the names of plugins already known to have
/// failed before resolution (their dependents are skipped, not reported missing).
pub fn resolve(candidates: &[Candidate], failed_names: &BTreeSet<String>) -> Resolution {
    let Links {
        mut edges,
        mut failed,
        ignored_optional,
    } = link(candidates, failed_names);
    fail_cycles(candidates, &edges, &mut failed);
    skip_dependents_of_failed(candidates, &mut edges, &mut failed);
    let levels = into_levels(candidates, &edges, &mut failed);
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

/// The candidates linked to their dependencies.
struct Links {
    /// `edges[i]`: the candidates `i` depends on, present at a fitting version.
    edges: Vec<Vec<usize>>,
    /// The first reason each candidate that cannot load fails (missing,
    /// unmet, failed).
    failed: Vec<Option<Unresolved>>,
    /// The optional dependencies ignored because the version present does
    /// not fit.
    ignored_optional: Vec<(usize, String)>,
}

/// Links each candidate to its dependencies.
fn link(candidates: &[Candidate], failed_names: &BTreeSet<String>) -> Links {
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
    Links {
        edges,
        failed,
        ignored_optional,
    }
}

/// Fails every plugin in a cycle: the first of each cycle by name gets the
/// cycle's path, the others point to it.
fn fail_cycles(candidates: &[Candidate], edges: &[Vec<usize>], failed: &mut [Option<Unresolved>]) {
    // Vertex 0 is a virtual root with an edge to every plugin; plugin i is
    // vertex i + 1, and an edge runs from a dependency to its dependent.
    let mut graph = IndexGraph::with_vertices(candidates.len() + 1);
    for (i, deps) in edges.iter().enumerate() {
        graph.add_edge(0, i + 1);
        for &d in deps {
            graph.add_edge(d + 1, i + 1);
        }
    }
    let Err(components) = graph.toposort_or_scc() else {
        return;
    };
    for component in components {
        let members: Vec<usize> = component
            .into_iter()
            .filter(|&v| v != 0)
            .map(|v| v - 1)
            .collect();
        let Some(&first) = members.iter().min_by_key(|&&m| &candidates[m].name) else {
            continue;
        };
        let path = cycle_through(first, &members, edges)
            .into_iter()
            .map(|m| candidates[m].name.clone())
            .collect();
        for &m in &members {
            failed[m] = Some(Unresolved::InCycle {
                reported_for: candidates[first].name.clone(),
            });
        }
        failed[first] = Some(Unresolved::Cycle { path });
    }
}

/// Skips the dependents of failed plugins, to a fixed point. Optional
/// dependencies that failed are simply dropped from the edges.
fn skip_dependents_of_failed(
    candidates: &[Candidate],
    edges: &mut [Vec<usize>],
    failed: &mut [Option<Unresolved>],
) {
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
}

/// The levels of the plugins that did not fail: a plugin's level is one
/// more than its deepest dependency's.
fn into_levels(
    candidates: &[Candidate],
    edges: &[Vec<usize>],
    failed: &mut [Option<Unresolved>],
) -> Vec<Vec<usize>> {
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
                    path: vec![candidates[i].name.clone()],
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
    levels
}
