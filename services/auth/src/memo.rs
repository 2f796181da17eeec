//! Answers remembered per token, for checks whose answer never changes: whether a key signed a
//! token is decided by the token's bytes alone, so a caller's token is verified once, not on
//! every request.

use std::collections::HashMap;
use std::sync::Mutex;

/// The most tokens a [`TokenMemo`] remembers; past this, it starts over.
const CAPACITY: usize = 10_000;

/// One answer per token (keyed by the token's text), bounded.
#[derive(Debug, Default)]
pub struct TokenMemo<V> {
    answers: Mutex<HashMap<String, V>>,
}

impl<V: Copy> TokenMemo<V> {
    pub fn new() -> TokenMemo<V> {
        TokenMemo {
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// The answer for `token`: remembered, or `compute`d now (outside the lock) and remembered.
    pub fn get_or(&self, token: &str, compute: impl FnOnce() -> V) -> V {
        if let Some(known) = self.lock().get(token) {
            return *known;
        }
        let answer = compute();
        let mut answers = self.lock();
        if answers.len() >= CAPACITY {
            answers.clear();
        }
        answers.insert(token.to_owned(), answer);
        answer
    }

    /// How many tokens it remembers.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it remembers no token.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, V>> {
        // Every change is a single insert or clear: a poisoned memo is still whole.
        self.answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_computed_once_per_token() {
        let memo = TokenMemo::new();
        let mut calls = 0;
        for _ in 0..2 {
            assert_eq!(
                memo.get_or("a", || {
                    calls += 1;
                    Some(1)
                }),
                Some(1)
            );
            assert_eq!(
                memo.get_or("b", || {
                    calls += 1;
                    None
                }),
                None
            );
        }
        assert_eq!(calls, 2);
        assert_eq!(memo.len(), 2);
    }

    #[test]
    fn a_full_memo_starts_over() {
        let memo = TokenMemo::new();
        for n in 0..CAPACITY {
            memo.get_or(&n.to_string(), || true);
        }
        assert_eq!(memo.len(), CAPACITY);
        memo.get_or("one more", || true);
        assert_eq!(memo.len(), 1);
    }
}
