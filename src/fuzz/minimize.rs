//! Delta debugging over the lines of a script (Zeller's ddmin, complements
//! only): the result still has the property and no single line can be
//! removed from it without losing the property.

/// The most candidate scripts one minimisation runs: each runs a Linux child,
/// so a pathological property must not make one finding take minutes.
pub const MAX_TESTS: usize = 3000;

/// Shrinks `lines` to a 1-minimal subsequence for which `test` holds
/// (`test(lines)` is assumed to hold). Returns the lines and how many
/// candidates were tested.
pub fn ddmin<T: Clone>(lines: Vec<T>, mut test: impl FnMut(&[T]) -> bool) -> (Vec<T>, usize) {
    let mut cur = lines;
    let mut tests = 0;
    let mut n = 2usize;
    while cur.len() >= 2 && tests < MAX_TESTS {
        let chunk = cur.len().div_ceil(n);
        let mut reduced = false;
        let mut start = 0;
        while start < cur.len() && tests < MAX_TESTS {
            let end = (start + chunk).min(cur.len());
            let candidate: Vec<T> = cur[..start].iter().chain(&cur[end..]).cloned().collect();
            tests += 1;
            if test(&candidate) {
                cur = candidate;
                n = n.saturating_sub(1).max(2);
                reduced = true;
                break;
            }
            start = end;
        }
        if !reduced {
            if n >= cur.len() {
                break;
            }
            n = (n * 2).min(cur.len());
        }
    }
    (cur, tests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_what_the_property_needs() {
        let lines: Vec<u32> = (0..50).collect();
        let (min, _) = ddmin(lines, |c| c.contains(&7) && c.contains(&31));
        assert_eq!(min, vec![7, 31]);
        let (min, _) = ddmin((0..10).collect::<Vec<u32>>(), |c| c.len() >= 3);
        assert_eq!(min.len(), 3);
    }
}
