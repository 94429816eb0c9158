//! The dependency graph between calls: which call waits for which, and the
//! refusal of unknown references and cycles. Pure: no I/O, no tower.

use std::collections::HashMap;

/// Who waits for whom, by call index (declaration order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// `deps[i]`: the calls `i` reads from, deduplicated, ascending.
    pub(crate) deps: Vec<Vec<usize>>,
    /// `dependents[i]`: the calls that read from `i`, ascending.
    pub(crate) dependents: Vec<Vec<usize>>,
}

/// Why no plan could be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PlanError {
    /// `call` refers to `reference`, which is no call.
    Unknown { call: String, reference: String },
    /// The calls of a cycle in dependency order, the first repeated last.
    Cycle(Vec<String>),
}

// === impl Plan ===

impl Plan {
    /// Builds the plan for `calls`: each call's (unique) name and the names
    /// of the calls it refers to.
    pub(crate) fn new<'a>(calls: &[(&'a str, Vec<&'a str>)]) -> Result<Self, PlanError> {
        let index: HashMap<&str, usize> = calls
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (*n, i))
            .collect();
        let mut deps = Vec::with_capacity(calls.len());
        for (name, refs) in calls {
            let mut d = Vec::with_capacity(refs.len());
            for r in refs {
                let Some(&j) = index.get(r) else {
                    return Err(PlanError::Unknown {
                        call: (*name).to_owned(),
                        reference: (*r).to_owned(),
                    });
                };
                d.push(j);
            }
            d.sort_unstable();
            d.dedup();
            deps.push(d);
        }
        if let Some(cycle) = find_cycle(&deps) {
            return Err(PlanError::Cycle(
                cycle.into_iter().map(|i| calls[i].0.to_owned()).collect(),
            ));
        }
        let mut dependents = vec![Vec::new(); calls.len()];
        for (i, d) in deps.iter().enumerate() {
            for &j in d {
                dependents[j].push(i);
            }
        }
        Ok(Self { deps, dependents })
    }

    /// The stages of strict barrier scheduling (dependencies first, ties in
    /// declaration order). The scheduler does not use barriers, but the
    /// stages make plans easy to assert on.
    #[cfg(test)]
    pub(crate) fn stages(&self) -> Vec<Vec<usize>> {
        let n = self.deps.len();
        let mut done = vec![false; n];
        let mut stages: Vec<Vec<usize>> = Vec::new();
        let mut remaining = n;
        while remaining > 0 {
            let ready: Vec<usize> = (0..n)
                .filter(|&i| !done[i] && self.deps[i].iter().all(|&d| done[d]))
                .collect();
            if ready.is_empty() {
                // Unreachable for a plan that passed cycle detection.
                break;
            }
            for &i in &ready {
                done[i] = true;
            }
            remaining -= ready.len();
            stages.push(ready);
        }
        stages
    }
}

/// Depth-first search for a cycle; returns it as a path of indices, first
/// repeated last, starting at the earliest-declared call that is on it.
fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    fn visit(
        i: usize,
        deps: &[Vec<usize>],
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        marks[i] = Mark::OnStack;
        stack.push(i);
        for &j in &deps[i] {
            match marks[j] {
                Mark::OnStack => {
                    let start = stack.iter().position(|&k| k == j).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(j);
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(j, deps, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks[i] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; deps.len()];
    let mut stack = Vec::new();
    for i in 0..deps.len() {
        if marks[i] == Mark::New
            && let Some(c) = visit(i, deps, &mut marks, &mut stack)
        {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(calls: &[(&'static str, &[&'static str])]) -> Result<Plan, PlanError> {
        let calls: Vec<(&str, Vec<&str>)> = calls.iter().map(|(n, d)| (*n, d.to_vec())).collect();
        Plan::new(&calls)
    }

    #[test]
    fn independent_and_dependent() {
        let p = plan(&[
            ("user", &[]),
            ("orders", &[]),
            ("customer", &["user", "user"]),
            ("invoice", &["customer", "orders"]),
        ])
        .unwrap();
        assert_eq!(p.deps, vec![vec![], vec![], vec![0], vec![1, 2]]);
        assert_eq!(p.dependents, vec![vec![2], vec![3], vec![3], vec![]]);
        assert_eq!(p.stages(), vec![vec![0, 1], vec![2], vec![3]]);
    }

    #[test]
    fn two_cycle_is_named() {
        let err = plan(&[("a", &["b"]), ("b", &["a"])]).unwrap_err();
        assert_eq!(
            err,
            PlanError::Cycle(vec!["a".into(), "b".into(), "a".into()])
        );
    }

    #[test]
    fn three_cycle_is_named() {
        let err = plan(&[
            ("root", &[]),
            ("x", &["root", "z"]),
            ("y", &["x"]),
            ("z", &["y"]),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            PlanError::Cycle(vec!["x".into(), "z".into(), "y".into(), "x".into()])
        );
    }

    #[test]
    fn self_reference_is_a_cycle() {
        let err = plan(&[("a", &["a"])]).unwrap_err();
        assert_eq!(err, PlanError::Cycle(vec!["a".into(), "a".into()]));
    }

    #[test]
    fn unknown_reference() {
        let err = plan(&[("a", &[]), ("b", &["nope"])]).unwrap_err();
        assert_eq!(
            err,
            PlanError::Unknown {
                call: "b".into(),
                reference: "nope".into()
            }
        );
    }

    #[test]
    fn diamond_is_no_cycle() {
        let p = plan(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])]).unwrap();
        assert_eq!(p.stages(), vec![vec![0], vec![1, 2], vec![3]]);
    }
}
