//! The host's benchmarks (`benches/`), a package of their own so that
//! building the host's tests never builds criterion; and what more than one
//! benchmark reads from a reply.

#![warn(missing_docs)]

use agent_host::Reply;

/// A message's phases (providers, validate, handler, evaluators) over many
/// messages, as the replies' timings give them, in microseconds.
#[derive(Default)]
pub struct Phases([Vec<u64>; 4]);

impl Phases {
    /// Adds the phases of one reply.
    pub fn record(&mut self, reply: &Reply) {
        let timings = &reply.timings;
        let phase_us = [
            timings.providers_us,
            timings.validate_us,
            timings.handler_us,
            timings.evaluators_us,
        ];
        for (list, us) in self.0.iter_mut().zip(phase_us) {
            list.push(us);
        }
    }

    /// The median of each phase, in the order above.
    pub fn medians(self) -> [u64; 4] {
        self.0.map(|mut list| {
            list.sort_unstable();
            list.get(list.len() / 2).copied().unwrap_or(0)
        })
    }
}

/// `count` distinct plugin files in a fresh folder, from one build of the
/// `bench-numbered` fixture: copies whose name slot says `numbered-000`,
/// `numbered-001`..., each one plugin of its own, answering `bench`.
pub fn numbered_files(count: usize) -> tempfile::TempDir {
    let file = test_support::fixture("bench-numbered");
    let bytes = std::fs::read(&file).expect("read the bench-numbered fixture");
    let slot = b"AGENT-HOST-BENCH-NAME:numbered-000";
    let at = bytes
        .windows(slot.len())
        .position(|window| window == slot)
        .expect("the bench-numbered fixture holds its name slot");
    let digits = at + slot.len() - 3..at + slot.len();
    let dir = tempfile::tempdir().expect("a folder for the numbered files");
    for n in 0..count {
        let mut copy = bytes.clone();
        copy[digits.clone()].copy_from_slice(format!("{:03}", n % 1000).as_bytes());
        let name = format!("numbered-{n:03}.{}", test_support::EXT);
        std::fs::write(dir.path().join(name), copy).expect("write a numbered file");
    }
    dir
}
