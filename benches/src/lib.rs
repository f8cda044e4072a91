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
