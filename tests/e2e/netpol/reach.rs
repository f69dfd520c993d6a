//! Truth tables and expected reachability, as upstream's `truthtable.go`
//! and `reachability.go`: an n×n table of `from → to` booleans, set with the
//! same vocabulary (`expect`, `expect_peer`, `expect_all_ingress`,
//! `expect_all_egress`), compared ignoring loopback (upstream's
//! `ignoreLoopback`: a pod reaching itself is not defined by the API), and
//! printed in upstream's `PrettyPrint` layout: rows from, columns to, `.` for
//! connected (or, in a comparison, equal), `X` for not, `?` for unknown.

use std::fmt::Write as _;

/// An n×n table of booleans over the same keys for rows and columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    keys: Vec<String>,
    values: Vec<Vec<Option<bool>>>,
}

impl Table {
    /// A table over `keys` with every cell `value`.
    pub fn new(keys: &[String], value: Option<bool>) -> Self {
        Self {
            keys: keys.to_vec(),
            values: vec![vec![value; keys.len()]; keys.len()],
        }
    }

    fn index(&self, key: &str) -> usize {
        self.keys
            .iter()
            .position(|k| k == key)
            .unwrap_or_else(|| panic!("no pod {key} in the model"))
    }

    /// Sets `from → to`.
    pub fn set(&mut self, from: &str, to: &str, value: bool) {
        let (f, t) = (self.index(from), self.index(to));
        self.values[f][t] = Some(value);
    }

    /// `from → to`, by position.
    pub fn at(&self, from: usize, to: usize) -> Option<bool> {
        self.values[from][to]
    }

    /// Sets `from → to` by position.
    pub fn set_at(&mut self, from: usize, to: usize, value: bool) {
        self.values[from][to] = Some(value);
    }

    /// The keys, in order.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Upstream's `PrettyPrint`.
    pub fn pretty(&self) -> String {
        let mut out = format!("-\t{}\n", self.keys.join("\t"));
        for (f, from) in self.keys.iter().enumerate() {
            out.push_str(from);
            for t in 0..self.keys.len() {
                out.push('\t');
                out.push(match self.values[f][t] {
                    None => '?',
                    Some(true) => '.',
                    Some(false) => 'X',
                });
            }
            out.push('\n');
        }
        out
    }

    /// The cell-by-cell comparison with `observed` (`.` equal, `X` not) and
    /// the number of wrong cells, loopback cells not counted.
    pub fn compare(&self, observed: &Self) -> (usize, Self) {
        let mut comparison = Self::new(&self.keys, None);
        let mut wrong = 0;
        for f in 0..self.keys.len() {
            for t in 0..self.keys.len() {
                let same = self.values[f][t] == observed.values[f][t];
                comparison.values[f][t] = Some(same);
                if !same && f != t {
                    wrong += 1;
                }
            }
        }
        (wrong, comparison)
    }
}

/// Matches pods by namespace, pod name, both or neither (upstream's `Peer`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Peer<'a> {
    /// The namespace, or any.
    pub ns: Option<&'a str>,
    /// The pod name, or any.
    pub pod: Option<&'a str>,
}

impl Peer<'_> {
    fn matches(&self, key: &str) -> bool {
        let (ns, pod) = key.split_once('/').unwrap_or((key, ""));
        self.ns.is_none_or(|n| n == ns) && self.pod.is_none_or(|p| p == pod)
    }
}

/// Any pod.
pub const ANY: Peer<'static> = Peer {
    ns: None,
    pod: None,
};

/// Every pod of namespace `ns`.
pub fn in_ns(ns: &str) -> Peer<'_> {
    Peer {
        ns: Some(ns),
        pod: None,
    }
}

/// Pod `pod` of namespace `ns`.
pub fn pod<'a>(ns: &'a str, pod: &'a str) -> Peer<'a> {
    Peer {
        ns: Some(ns),
        pod: Some(pod),
    }
}

/// The expected reachability of one probe step.
#[derive(Clone, Debug)]
pub struct Reachability {
    /// The expected table.
    pub expected: Table,
}

impl Reachability {
    /// Everything reachable (`true`) or nothing (`false`).
    pub fn new(keys: &[String], default: bool) -> Self {
        Self {
            expected: Table::new(keys, Some(default)),
        }
    }

    /// One pair.
    pub fn expect(&mut self, from: &str, to: &str, connected: bool) -> &mut Self {
        self.expected.set(from, to, connected);
        self
    }

    /// Every pair matching the two peers.
    pub fn expect_peer(&mut self, from: Peer<'_>, to: Peer<'_>, connected: bool) -> &mut Self {
        let keys = self.expected.keys().to_vec();
        for f in keys.iter().filter(|k| from.matches(k)) {
            for t in keys.iter().filter(|k| to.matches(k)) {
                self.expected.set(f, t, connected);
            }
        }
        self
    }

    /// Everything into `to`.
    pub fn expect_all_ingress(&mut self, to: &str, connected: bool) -> &mut Self {
        let (ns, p) = to.split_once('/').unwrap_or((to, ""));
        self.expect_peer(ANY, pod(ns, p), connected)
    }

    /// Everything out of `from`.
    pub fn expect_all_egress(&mut self, from: &str, connected: bool) -> &mut Self {
        let (ns, p) = from.split_once('/').unwrap_or((from, ""));
        self.expect_peer(pod(ns, p), ANY, connected)
    }

    /// Upstream's `PrintSummary(true, true, true)`: counts, then the
    /// expected, observed and comparison tables.
    pub fn summary(&self, observed: &Table) -> String {
        let (wrong, comparison) = self.expected.compare(observed);
        let n = self.expected.keys().len();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "reachability: correct:{}, incorrect:{wrong}, result={} ({n} loopback cases ignored)\n",
            n * n - n - wrong,
            wrong == 0
        );
        let _ = writeln!(out, "expected:\n\n{}", self.expected.pretty());
        let _ = writeln!(out, "observed:\n\n{}", observed.pretty());
        let _ = writeln!(out, "comparison:\n\n{}", comparison.pretty());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        ["x/a", "x/b", "y/a"].map(String::from).to_vec()
    }

    #[test]
    fn peers_set_rows_and_columns_and_loopback_is_ignored() {
        let mut r = Reachability::new(&keys(), true);
        r.expect_peer(ANY, in_ns("x"), false)
            .expect("x/b", "x/a", true);
        assert_eq!(
            r.expected.pretty(),
            "-\tx/a\tx/b\ty/a\nx/a\tX\tX\t.\nx/b\t.\tX\t.\ny/a\tX\tX\t.\n"
        );
        let mut observed = r.expected.clone();
        observed.set("x/a", "x/a", true);
        assert_eq!(r.expected.compare(&observed).0, 0, "loopback ignored");
        observed.set("y/a", "x/b", true);
        let (wrong, comparison) = r.expected.compare(&observed);
        assert_eq!(wrong, 1);
        assert_eq!(comparison.at(2, 1), Some(false));
        r.expect_all_egress("y/a", false)
            .expect_all_ingress("y/a", true);
        assert_eq!(r.expected.at(2, 0), Some(false));
        assert_eq!(r.expected.at(0, 2), Some(true));
    }
}
