//! Coverage of a fuzzing run: how often each operation ran and how often each
//! (operation, errno) pair came out, counted from the output lines.

use std::collections::BTreeMap;

/// Counts of results per operation.
#[derive(Default, Debug)]
pub struct Stats {
    /// operation -> result (`OK` or the errno name) -> count.
    counts: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Stats {
    /// Counts the lines of one script's output (`LINE => RESULT`).
    pub fn add(&mut self, output: &[u8]) {
        for line in output.split(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(line);
            // The echoed line may itself contain " => " in a quoted token;
            // the result is after the last one.
            let Some((input, result)) = text.rsplit_once(" => ") else {
                continue;
            };
            let op = input.split_whitespace().next().unwrap_or("").to_string();
            let res = match result.strip_prefix("ERR ") {
                Some(errno) => errno.trim().to_string(),
                None => "OK".to_string(),
            };
            *self.counts.entry(op).or_default().entry(res).or_default() += 1;
        }
    }

    /// The distinct (operation, errno) pairs seen.
    pub fn errno_pairs(&self) -> usize {
        self.counts
            .values()
            .map(|r| r.keys().filter(|k| *k != "OK").count())
            .sum()
    }

    /// The coverage table: one line per operation (total, OK, each errno),
    /// then the operations never run and the number of distinct pairs.
    pub fn table(&self) -> String {
        let mut s = String::from("coverage (operation: runs, results):\n");
        for (op, results) in &self.counts {
            let total: u64 = results.values().sum();
            let parts: Vec<String> = results.iter().map(|(r, n)| format!("{r}:{n}")).collect();
            s.push_str(&format!("  {op:<13} {total:>8}  {}\n", parts.join(" ")));
        }
        let missing: Vec<&str> = super::gen::operation_names()
            .filter(|op| !self.counts.contains_key(*op))
            .collect();
        s.push_str(&format!(
            "operations run: {}; never run: {}\n",
            self.counts.len(),
            if missing.is_empty() {
                "none".to_string()
            } else {
                missing.join(" ")
            }
        ));
        s.push_str(&format!(
            "distinct (operation, errno) pairs: {}\n",
            self.errno_pairs()
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_results_per_operation() {
        let mut st = Stats::default();
        st.add(b"mkdir /a 0755 => OK\nmkdir /a 0755 => ERR EEXIST\nwrite f \" => \" => OK 4\n");
        assert_eq!(st.errno_pairs(), 1);
        let t = st.table();
        assert!(t.contains("mkdir"), "{t}");
        assert!(t.contains("EEXIST:1 OK:1"), "{t}");
        assert!(t.contains("write"), "{t}");
    }
}
