//! `{{ if }}` branches as configuration. Images switch whole jobs on the
//! environment (`{{ if .CONSUL_AGENT }}`), so instead of keeping one branch
//! the importer renders the file once per combination of the values its
//! conditions can tell apart, converts each, and merges them: what every
//! rendering agrees on is written once; a job or watch that differs is written
//! once per version with an `enabled` condition that holds exactly where that
//! version was rendered. pilotfish evaluates `enabled` at start, after
//! `${VAR}` expansion.
//!
//! A variable's values are "unset" (ContainerPilot rendered it as ""), each
//! literal a condition compares it with, and "anything else" ([`OTHER`]).

use std::collections::{BTreeMap, BTreeSet};

use super::{eval_unset, var_operand, Assign, BlockKind, Node, Tok};
use crate::config::raw::{RawConfig, RawEnabled, RawJob, RawWatch};

/// Stands for "set to a value no condition names".
pub(super) const OTHER: &str = "\u{E00F}";

/// More renderings than this and the importer keeps one branch per `if`, as
/// it did before (each with a note).
const MAX_VARIANTS: usize = 64;

/// The variables `if`/`with` conditions read, each with the values that make
/// a difference (first: unset).
pub(super) fn condition_vars(tree: &[Node]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    collect(tree, &mut out);
    out.into_iter()
        .map(|(name, lits)| {
            let mut values = vec![String::new()];
            values.extend(lits);
            values.push(OTHER.to_string());
            (name, values)
        })
        .collect()
}

fn collect(nodes: &[Node], out: &mut BTreeMap<String, BTreeSet<String>>) {
    for n in nodes {
        let Node::Block(kind, clauses) = n else {
            continue;
        };
        if matches!(kind, BlockKind::Range | BlockKind::Define) {
            continue;
        }
        // `{{ if .X }}{{ .X }}{{ else }}d{{ end }}` is `${X:-d}`, not a switch.
        if *kind == BlockKind::If && super::if_var_else_text(clauses).is_some() {
            continue;
        }
        for c in clauses {
            if matches!(kind, BlockKind::If | BlockKind::With) {
                if let Some(cond) = &c.cond {
                    collect_cond(cond, out);
                }
            }
            collect(&c.body, out);
        }
    }
}

fn collect_cond(toks: &[Tok], out: &mut BTreeMap<String, BTreeSet<String>>) {
    if eval_unset(toks).is_none() {
        return; // Not something the importer can evaluate: one branch, noted.
    }
    let compares = toks
        .iter()
        .any(|t| matches!(t, Tok::Ident(f) if f == "eq" || f == "ne"));
    let literals: BTreeSet<String> = if compares {
        toks.iter()
            .filter_map(|t| match t {
                Tok::Str(s) | Tok::Num(s) => Some(s.clone()),
                _ => None,
            })
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        BTreeSet::new()
    };
    // A literal `enabled` cannot quote stays out: its variable is left unset.
    if literals
        .iter()
        .any(|l| l.contains(['\'', '$', '=']) || l.trim() != l)
    {
        return;
    }
    let mut i = 0;
    while i < toks.len() {
        match var_operand(&toks[i..]) {
            Some((name, used)) => {
                out.entry(name)
                    .or_default()
                    .extend(literals.iter().cloned());
                i += used;
            }
            None => i += 1,
        }
    }
}

/// Every combination of the variables' values, the all-unset one first; None
/// when there are too many.
pub(super) fn assignments(vars: &BTreeMap<String, Vec<String>>) -> Option<Vec<Vec<usize>>> {
    let mut total = 1usize;
    for values in vars.values() {
        total = total.checked_mul(values.len())?;
        if total > MAX_VARIANTS {
            return None;
        }
    }
    let mut out = vec![Vec::new()];
    for values in vars.values() {
        out = out
            .into_iter()
            .flat_map(|prefix: Vec<usize>| {
                (0..values.len()).map(move |v| {
                    let mut p = prefix.clone();
                    p.push(v);
                    p
                })
            })
            .collect();
    }
    Some(out)
}

/// The variable values of one combination (unset variables absent).
pub(super) fn assign(vars: &BTreeMap<String, Vec<String>>, point: &[usize]) -> Assign {
    vars.iter()
        .zip(point)
        .filter(|(_, v)| **v != 0)
        .map(|((name, values), v)| (name.clone(), values[*v].clone()))
        .collect()
}

/// How a note names a combination: `CONSUL_AGENT set, MODE="acme"`.
pub(super) fn describe(vars: &BTreeMap<String, Vec<String>>, point: &[usize]) -> String {
    let parts: Vec<String> = vars
        .iter()
        .zip(point)
        .map(|((name, values), v)| match values[*v].as_str() {
            "" => format!("{name} unset"),
            OTHER => format!("{name} set"),
            lit => format!("{name}=\"{lit}\""),
        })
        .collect();
    parts.join(", ")
}

/// One rendering, converted.
pub(super) struct Variant {
    pub point: Vec<usize>,
    pub raw: RawConfig,
}

/// Jobs and watches of every rendering, each distinct version once per
/// `enabled` conjunction, in file order; the rest comes from the first
/// (all-unset) rendering. Returns the notes on what could not be switched.
pub(super) fn merge(
    vars: &BTreeMap<String, Vec<String>>,
    variants: &[Variant],
) -> (RawConfig, Vec<String>) {
    let Some(base) = variants.first() else {
        return (RawConfig::default(), Vec::new());
    };
    let mut notes = Vec::new();
    let mut raw = base.raw.clone();
    raw.jobs = merge_items(
        vars,
        variants,
        |r| &r.jobs,
        |j: &mut RawJob, e| j.enabled = e,
    );
    raw.watches = merge_items(
        vars,
        variants,
        |r| &r.watches,
        |w: &mut RawWatch, e| w.enabled = e,
    );
    for v in &variants[1..] {
        let differs: Vec<&str> = [
            ("consul", v.raw.consul != base.raw.consul),
            ("logging", v.raw.logging != base.raw.logging),
            ("telemetry", v.raw.telemetry != base.raw.telemetry),
            ("stop_timeout", v.raw.stop_timeout != base.raw.stop_timeout),
            ("control", v.raw.control != base.raw.control),
            ("templates", v.raw.templates != base.raw.templates),
        ]
        .into_iter()
        .filter(|(_, d)| *d)
        .map(|(k, _)| k)
        .collect();
        for key in differs {
            notes.push(format!(
                "{key}: ContainerPilot rendered it differently with {}; pilotfish cannot switch a {key} section on a variable, so the file keeps what it is with every variable unset — edit it if you run with that setting",
                describe(vars, &v.point)
            ));
        }
    }
    // One note per key is enough: the same section differs for many combinations.
    let mut seen = BTreeSet::new();
    notes.retain(|n| seen.insert(n.split(':').next().unwrap_or("").to_string()));
    (raw, notes)
}

fn merge_items<T: Clone + PartialEq>(
    vars: &BTreeMap<String, Vec<String>>,
    variants: &[Variant],
    items: impl Fn(&RawConfig) -> &Vec<T>,
    set_enabled: impl Fn(&mut T, Option<RawEnabled>),
) -> Vec<T> {
    // (position in its rendering, item, the renderings that have it)
    let mut versions: Vec<(usize, T, Vec<usize>)> = Vec::new();
    for (vi, v) in variants.iter().enumerate() {
        for (pos, item) in items(&v.raw).iter().enumerate() {
            match versions.iter_mut().find(|(_, it, _)| it == item) {
                Some((_, _, seen)) => seen.push(vi),
                None => versions.push((pos, item.clone(), vec![vi])),
            }
        }
    }
    versions.sort_by_key(|(pos, _, _)| *pos);
    let sizes: Vec<usize> = vars.values().map(Vec::len).collect();
    let mut out = Vec::new();
    for (_, item, seen) in versions {
        let points: Vec<Vec<usize>> = seen.iter().map(|i| variants[*i].point.clone()).collect();
        for terms in cover(vars, &sizes, points) {
            let mut it = item.clone();
            set_enabled(
                &mut it,
                match terms.len() {
                    0 => None,
                    1 => Some(RawEnabled::One(terms[0].clone())),
                    _ => Some(RawEnabled::All(terms)),
                },
            );
            out.push(it);
        }
    }
    out
}

/// Conjunctions of `enabled` terms that together hold exactly on `points`.
fn cover(
    vars: &BTreeMap<String, Vec<String>>,
    sizes: &[usize],
    points: Vec<Vec<usize>>,
) -> Vec<Vec<String>> {
    let values: Vec<BTreeSet<usize>> = (0..sizes.len())
        .map(|k| points.iter().map(|p| p[k]).collect())
        .collect();
    let product: usize = values.iter().map(BTreeSet::len).product();
    if product == points.len() {
        let mut terms = Vec::new();
        let mut ok = true;
        for ((name, domain), vals) in vars.iter().zip(&values) {
            if vals.len() == domain.len() {
                continue;
            }
            match terms_for(name, domain, vals) {
                Some(t) => terms.extend(t),
                None => ok = false,
            }
        }
        if ok {
            return vec![terms];
        }
    }
    // Split on the first variable that takes several values here.
    let Some(k) = values.iter().position(|v| v.len() > 1) else {
        return Vec::new();
    };
    values[k]
        .iter()
        .flat_map(|v| {
            let part: Vec<Vec<usize>> = points.iter().filter(|p| p[k] == *v).cloned().collect();
            cover(vars, sizes, part)
        })
        .collect()
}

/// `enabled` terms saying the variable's value is one of `vals`.
fn terms_for(name: &str, domain: &[String], vals: &BTreeSet<usize>) -> Option<Vec<String>> {
    let other = domain.len() - 1;
    if vals.contains(&other) {
        Some(
            (0..other)
                .filter(|v| !vals.contains(v))
                .map(|v| format!("${{{name}:-}} != '{}'", domain[v]))
                .collect(),
        )
    } else if vals.len() == 1 {
        let v = *vals.iter().next()?;
        Some(vec![format!("${{{name}:-}} == '{}'", domain[v])])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env::Env;
    use crate::config::validate::condition_holds;

    fn vars(spec: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        spec.iter()
            .map(|(n, lits)| {
                let mut v = vec![String::new()];
                v.extend(lits.iter().map(|s| s.to_string()));
                v.push(OTHER.into());
                (n.to_string(), v)
            })
            .collect()
    }

    /// Every term list `cover` gives holds exactly on its points, checked by
    /// evaluating the terms the way `pilotfish` will.
    fn check(vars: &BTreeMap<String, Vec<String>>, points: Vec<Vec<usize>>) {
        let sizes: Vec<usize> = vars.values().map(Vec::len).collect();
        let conj = cover(vars, &sizes, points.clone());
        for p in assignments(vars).expect("few") {
            let a = assign(vars, &p);
            let env: Env = a
                .iter()
                .map(|(k, v)| (k.clone(), if v == OTHER { "x".into() } else { v.clone() }))
                .collect();
            let holding = conj
                .iter()
                .filter(|terms| {
                    terms
                        .iter()
                        .all(|t| condition_holds(t, &env).expect("valid"))
                })
                .count();
            let expected = usize::from(points.contains(&p));
            assert_eq!(holding, expected, "{p:?} under {conj:?}");
        }
    }

    #[test]
    fn covers_are_exact() {
        let one = vars(&[("A", &[])]);
        check(&one, vec![vec![1]]);
        check(&one, vec![vec![0]]);
        check(&one, vec![vec![0], vec![1]]);
        let two = vars(&[("A", &[]), ("MODE", &["acme", "off"])]);
        let all = assignments(&two).expect("few");
        // Every subset of a few shapes: a rectangle, a diagonal, a complement.
        check(&two, all.iter().filter(|p| p[0] == 1).cloned().collect());
        check(
            &two,
            all.iter()
                .filter(|p| p[0] == 1 && p[1] == 1)
                .cloned()
                .collect(),
        );
        check(&two, all.iter().filter(|p| p[1] != 1).cloned().collect());
        check(
            &two,
            all.iter()
                .filter(|p| (p[0] == 1) != (p[1] == 0))
                .cloned()
                .collect(),
        );
    }

    #[test]
    fn a_flag_reads_as_set_or_unset() {
        let one = vars(&[("CONSUL_AGENT", &[])]);
        let sizes = [2];
        assert_eq!(
            cover(&one, &sizes, vec![vec![1]]),
            [["${CONSUL_AGENT:-} != ''"]]
        );
        assert_eq!(
            cover(&one, &sizes, vec![vec![0]]),
            [["${CONSUL_AGENT:-} == ''"]]
        );
    }
}
