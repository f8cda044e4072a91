//! The chain of service calls a thread is in: plugin A's method calling
//! plugin B's, calling A's again, and so on, all on one thread. Bounded in
//! depth, because a cycle of services calling each other would otherwise
//! recurse until the thread's stack overflows and the process dies. The
//! call that would cross the bound fails, with the chain in its message.

use std::cell::RefCell;

/// The deepest chain of nested service calls on one thread.
pub(crate) const MAX_DEPTH: usize = 32;

thread_local! {
    static CHAIN: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// A place in the chain, left when dropped.
pub(crate) struct Link(());

impl Drop for Link {
    fn drop(&mut self) {
        CHAIN.with(|chain| chain.borrow_mut().pop());
    }
}

/// A service call refused because the chain it would join is
/// [`MAX_DEPTH`] calls deep already.
#[derive(Debug, thiserror::Error)]
#[error(
    "not called: service calls nested more than {MAX_DEPTH} deep (a cycle of services \
     calling each other?): {chain}"
)]
pub(crate) struct TooDeep {
    /// The chain in one line, ending with the call refused.
    chain: String,
}

/// Enters `link` (such as `weather.forecast`) into this thread's chain, or
/// says why not: the chain is [`MAX_DEPTH`] calls deep already.
pub(crate) fn enter(link: &str) -> Result<Link, TooDeep> {
    CHAIN.with(|chain| {
        let mut chain = chain.borrow_mut();
        if chain.len() >= MAX_DEPTH {
            return Err(TooDeep {
                chain: describe(&chain, link),
            });
        }
        chain.push(link.to_string());
        Ok(Link(()))
    })
}

/// The chain in one line: its first links, then its last ones.
fn describe(chain: &[String], next: &str) -> String {
    const SHOWN: usize = 4;
    let mut parts: Vec<&str> = Vec::new();
    if chain.len() <= 2 * SHOWN {
        parts.extend(chain.iter().map(String::as_str));
    } else {
        parts.extend(chain[..SHOWN].iter().map(String::as_str));
        parts.push("...");
        parts.extend(chain[chain.len() - SHOWN..].iter().map(String::as_str));
    }
    parts.push(next);
    parts.join(" -> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_is_bounded_and_named_and_left_behind() {
        let mut links = Vec::new();
        for depth in 0..MAX_DEPTH {
            let name = if depth % 2 == 0 {
                "ping.hit"
            } else {
                "pong.hit"
            };
            links.push(enter(name).expect("within the bound"));
        }
        let error = enter("ping.hit").err().expect("over the bound").to_string();
        assert!(error.contains("nested more than 32 deep"), "{error}");
        assert!(
            error.contains("ping.hit -> pong.hit -> ping.hit -> pong.hit -> ... -> "),
            "{error}"
        );
        assert!(error.ends_with("pong.hit -> ping.hit"), "{error}");
        drop(links);
        let _again = enter("ping.hit").expect("the chain was left");
    }
}
