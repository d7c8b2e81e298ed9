//! The per-`τ` multiple-choice knapsack: each client picks one option
//! (sit out, or one level with its least share at this `τ`), the shares sum
//! to at most 1, the weighted penalty is minimised.
//!
//! Two oracles: [`hull_greedy`] (LP relaxation on each client's lower convex
//! hull, at most one fractional client, rounded down and then improved with
//! the leftover band) and [`milp`] (exact, good_lp with microlp). Both return
//! a lower bound on the knapsack's optimum: the LP value, or the MILP value.

use good_lp::constraint::{eq, leq};
use good_lp::{Expression, ProblemVariables, Solution, SolverModel, Variable, microlp, variable};

use crate::error::AllocError;

/// One option of one client at a fixed `τ`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Opt {
    /// Index of the level, `None` for sitting out.
    pub level: Option<usize>,
    /// Kept components of the level (0 for sitting out).
    pub components: u32,
    /// Least share at this `τ`.
    pub share: f64,
    /// `|dβ/dτ|` at this `τ` (for the dual lower bound of the search).
    pub slope: f64,
    /// Weighted penalty `p_k·D_k`.
    pub cost: f64,
}

/// An oracle's answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Knapsack {
    /// Chosen level per client (`None`: sits out).
    pub choice: Vec<Option<usize>>,
    /// Its weighted penalty.
    pub cost: f64,
    /// A lower bound on the optimal weighted penalty at this `τ`.
    pub lower_bound: f64,
    /// The LP's price of band `λ ≥ 0` (efficiency of the fractional step;
    /// 0 when everything fitted); only set by [`hull_greedy`].
    pub dual_price: f64,
}

/// Indices of client options on the lower convex hull of `(share, cost)`,
/// by increasing share and strictly decreasing cost.
fn lower_hull(opts: &[Opt]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..opts.len()).collect();
    // A total order (ties by index), so the unstable sort gives the stable
    // sort's order. Options usually arrive sorted (sitting out, then levels
    // by payload): then there is nothing to sort.
    let order = |&a: &usize, &b: &usize| {
        opts[a]
            .share
            .total_cmp(&opts[b].share)
            .then(opts[a].cost.total_cmp(&opts[b].cost))
            .then(a.cmp(&b))
    };
    if !idx.is_sorted_by(|a, b| order(a, b).is_le()) {
        idx.sort_unstable_by(order);
    }
    let mut hull: Vec<usize> = Vec::with_capacity(idx.len());
    for i in idx {
        let p = opts[i];
        if hull.last().is_some_and(|&last| p.cost >= opts[last].cost) {
            continue; // dominated: no cheaper for more band
        }
        while hull.len() >= 2 {
            let (a, b) = (opts[hull[hull.len() - 2]], opts[hull[hull.len() - 1]]);
            // keep b only if it lies strictly below the chord a→p
            if (b.cost - a.cost) * (p.share - a.share) >= (p.cost - a.cost) * (b.share - a.share) {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(i);
    }
    hull
}

/// Spends the leftover band: each client in turn takes its cheapest option
/// (any option, not only the hull) that fits; two passes.
fn improve(opts: &[Vec<Opt>], current: &mut [usize], budget: &mut f64, cost: &mut f64) {
    for _pass in 0..2 {
        let mut changed = false;
        for (k, o) in opts.iter().enumerate() {
            if o.is_empty() {
                continue;
            }
            let cur = o[current[k]];
            let mut best = current[k];
            for (j, x) in o.iter().enumerate() {
                if x.share - cur.share <= *budget && x.cost < o[best].cost {
                    best = j;
                }
            }
            if best != current[k] {
                *budget -= o[best].share - cur.share;
                *cost += o[best].cost - cur.cost;
                current[k] = best;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
}

/// LP relaxation by the greedy on convex hulls (Sinha–Zoltners), then two
/// integer candidates: (A) the fractional client rounded down; (B) the
/// fractional client rounded up, with the least efficient hull steps taken
/// so far undone until the band fits. Each is improved with the leftover
/// band ([`improve`]); the cheaper is returned with the LP value as bound.
///
/// Gap of candidate A, hence of the answer: at most `p_f·(D_f(lo) − D_f(hi))`
/// for the fractional client `f`.
pub(crate) fn hull_greedy(opts: &[Vec<Opt>]) -> Knapsack {
    let n = opts.len();
    let hulls: Vec<Vec<usize>> = opts.iter().map(|o| lower_hull(o)).collect();
    let mut pos = vec![0usize; n];
    let mut budget = 1.0;
    let mut cost = 0.0;
    // (efficiency, client, step)
    let mut incs: Vec<(f64, usize, usize)> = Vec::new();
    for (k, h) in hulls.iter().enumerate() {
        let Some(&first) = h.first() else { continue };
        budget -= opts[k][first].share;
        cost += opts[k][first].cost;
        for s in 1..h.len() {
            let (a, b) = (opts[k][h[s - 1]], opts[k][h[s]]);
            let ds = b.share - a.share;
            let eff = if ds > 0.0 {
                (a.cost - b.cost) / ds
            } else {
                f64::INFINITY
            };
            incs.push((eff, k, s));
        }
    }
    // (client, step) pairs are distinct: a total order, so unstable is exact.
    incs.sort_unstable_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let step = |k: usize, s: usize| -> (f64, f64) {
        let (a, b) = (opts[k][hulls[k][s - 1]], opts[k][hulls[k][s]]);
        (b.share - a.share, b.cost - a.cost)
    };
    let mut taken: Vec<(usize, usize)> = Vec::new();
    let mut fractional = None;
    let mut dual_price = 0.0;
    let mut lower_bound = f64::NEG_INFINITY;
    for &(eff, k, s) in &incs {
        if pos[k] + 1 != s {
            continue;
        }
        let (ds, dc) = step(k, s);
        if ds <= budget {
            budget -= ds;
            cost += dc;
            pos[k] = s;
            taken.push((k, s));
        } else {
            lower_bound = cost + dc * (budget / ds);
            fractional = Some((k, s));
            dual_price = if eff.is_finite() { eff } else { 0.0 };
            break;
        }
    }
    if lower_bound == f64::NEG_INFINITY {
        lower_bound = cost; // everything on the hulls fitted: LP = integer
    }
    let to_opts = |p: &[usize]| -> Vec<usize> {
        (0..n)
            .map(|k| hulls[k].get(p[k]).copied().unwrap_or(0))
            .collect()
    };
    // Candidate A: round the fractional client down.
    let mut cur_a = to_opts(&pos);
    let (mut budget_a, mut cost_a) = (budget, cost);
    improve(opts, &mut cur_a, &mut budget_a, &mut cost_a);
    let (mut best, mut best_cost) = (cur_a, cost_a);
    // Candidate B: round it up and undo the least efficient steps taken.
    if let Some((kf, sf)) = fractional {
        let (ds, dc) = step(kf, sf);
        let mut pos_b = pos.clone();
        pos_b[kf] = sf;
        let mut deficit = ds - budget;
        let mut cost_b = cost + dc;
        for &(k, s) in taken.iter().rev() {
            if deficit <= 0.0 {
                break;
            }
            if k == kf || pos_b[k] != s {
                continue;
            }
            let (ds_k, dc_k) = step(k, s);
            pos_b[k] = s - 1;
            deficit -= ds_k;
            cost_b -= dc_k;
        }
        if deficit <= 0.0 {
            let mut cur_b = to_opts(&pos_b);
            let mut budget_b = -deficit;
            improve(opts, &mut cur_b, &mut budget_b, &mut cost_b);
            if cost_b < best_cost {
                best = cur_b;
                best_cost = cost_b;
            }
        }
    }
    let choice = (0..n)
        .map(|k| opts[k].get(best[k]).and_then(|o| o.level))
        .collect();
    Knapsack {
        choice,
        cost: best_cost,
        lower_bound: lower_bound.min(best_cost),
        dual_price,
    }
}

/// Exact multiple-choice knapsack as a MILP (good_lp, microlp): binaries
/// `x_{k,j}`, `Σ_j x_{k,j} = 1`, `Σ x·share ≤ 1`; with `tied`, binaries
/// `y_m` with `x_{k,j} ≤ y_{m(j)}` and `Σ_m y_m ≤ 1` (one `m` for all
/// participants).
pub(crate) fn milp(opts: &[Vec<Opt>], tied: bool) -> Result<Knapsack, AllocError> {
    let n = opts.len();
    let mut vars = ProblemVariables::new();
    let mut xs: Vec<Vec<Option<Variable>>> = Vec::with_capacity(n);
    let mut any = false;
    for o in opts {
        if o.len() <= 1 {
            xs.push(vec![None; o.len()]);
        } else {
            any = true;
            xs.push(
                o.iter()
                    .map(|_| Some(vars.add(variable().binary())))
                    .collect(),
            );
        }
    }
    if !any {
        let choice: Vec<Option<usize>> = opts
            .iter()
            .map(|o| o.first().and_then(|x| x.level))
            .collect();
        let cost = opts.iter().map(|o| o.first().map_or(0.0, |x| x.cost)).sum();
        return Ok(Knapsack {
            choice,
            cost,
            lower_bound: cost,
            dual_price: 0.0,
        });
    }
    let mut comps: Vec<u32> = opts
        .iter()
        .flatten()
        .map(|o| o.components)
        .filter(|&m| m > 0)
        .collect();
    comps.sort_unstable();
    comps.dedup();
    let ys: Vec<Variable> = if tied {
        comps
            .iter()
            .map(|_| vars.add(variable().binary()))
            .collect()
    } else {
        vec![]
    };
    let mut objective = Expression::from(0.0);
    let mut band = Expression::from(0.0);
    let mut fixed_share = 0.0;
    let mut fixed_cost = 0.0;
    let mut constraints = Vec::new();
    for (k, o) in opts.iter().enumerate() {
        let mut one = Expression::from(0.0);
        for (j, opt) in o.iter().enumerate() {
            match xs[k][j] {
                Some(x) => {
                    objective += opt.cost * x;
                    band += opt.share * x;
                    one += x;
                    if let (true, Ok(i)) = (tied, comps.binary_search(&opt.components)) {
                        constraints.push(leq(Expression::from(x), Expression::from(ys[i])));
                    }
                }
                None => {
                    fixed_share += opt.share;
                    fixed_cost += opt.cost;
                }
            }
        }
        if o.len() > 1 {
            constraints.push(eq(one, Expression::from(1.0)));
        }
    }
    constraints.push(leq(band, Expression::from(1.0 - fixed_share)));
    if tied {
        let sum_y: Expression = ys.iter().map(|&y| Expression::from(y)).sum();
        constraints.push(leq(sum_y, Expression::from(1.0)));
    }
    let mut model = vars.minimise(objective).using(microlp);
    for c in constraints {
        model = model.with(c);
    }
    let sol = model
        .solve()
        .map_err(|e| AllocError::Solver(e.to_string()))?;
    let mut choice = Vec::with_capacity(n);
    let mut cost = fixed_cost;
    for (k, o) in opts.iter().enumerate() {
        if o.len() <= 1 {
            choice.push(o.first().and_then(|x| x.level));
            continue;
        }
        let mut pick = 0;
        let mut best = f64::NEG_INFINITY;
        for (j, x) in xs[k].iter().enumerate() {
            if let Some(x) = x {
                let v = sol.value(*x);
                if v > best {
                    best = v;
                    pick = j;
                }
            }
        }
        cost += o[pick].cost;
        choice.push(o[pick].level);
    }
    Ok(Knapsack {
        choice,
        cost,
        lower_bound: cost,
        dual_price: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(level: usize, share: f64, cost: f64) -> Opt {
        Opt {
            level: Some(level),
            components: level as u32 + 1,
            share,
            slope: 0.0,
            cost,
        }
    }
    fn out(cost: f64) -> Opt {
        Opt {
            level: None,
            components: 0,
            share: 0.0,
            slope: 0.0,
            cost,
        }
    }

    #[test]
    fn hull_drops_dominated_and_concave_points() {
        // (0,1) (0.2,0.9) (0.3,0.5) (0.5,0.45) (0.6,0.1): (0.2,0.9) lies above
        // the chord (0,1)→(0.3,0.5) (0.667 at 0.2), (0.5,0.45) above the chord
        // (0.3,0.5)→(0.6,0.1) (0.233 at 0.5); hull = 0, 2, 4.
        let o = vec![
            out(1.0),
            opt(0, 0.2, 0.9),
            opt(1, 0.3, 0.5),
            opt(2, 0.5, 0.45),
            opt(3, 0.6, 0.1),
        ];
        assert_eq!(lower_hull(&o), vec![0, 2, 4]);
        let o2 = vec![out(1.0), opt(0, 0.2, 1.2)]; // worse than sitting out
        assert_eq!(lower_hull(&o2), vec![0]);
    }

    #[test]
    fn greedy_lp_bound_and_rounding_by_hand() {
        // Two clients, each: out (0, 0.5) or level (0.6, 0.0).
        // LP: take one fully (0.6), the other 0.4/0.6 of the way: 0.5 − 0.5·2/3.
        let o = vec![
            vec![out(0.5), opt(0, 0.6, 0.0)],
            vec![out(0.5), opt(0, 0.6, 0.0)],
        ];
        let g = hull_greedy(&o);
        assert!((g.lower_bound - (0.5 - 0.5 * 2.0 / 3.0)).abs() < 1e-12);
        assert!((g.cost - 0.5).abs() < 1e-12);
        assert_eq!(g.choice.iter().filter(|c| c.is_some()).count(), 1);
        let m = milp(&o, false).unwrap();
        assert!((m.cost - 0.5).abs() < 1e-9);
    }

    #[test]
    fn tied_milp_uses_one_level() {
        // Client 0 prefers level 0 strongly, client 1 level 1; tied: one level.
        let o = vec![
            vec![out(1.0), opt(0, 0.1, 0.0), opt(1, 0.1, 0.5)],
            vec![out(1.0), opt(0, 0.1, 0.6), opt(1, 0.1, 0.0)],
        ];
        let free = milp(&o, false).unwrap();
        assert!(free.cost.abs() < 1e-9);
        let tied = milp(&o, true).unwrap();
        assert!((tied.cost - 0.5).abs() < 1e-9, "{tied:?}");
        assert_eq!(tied.choice, vec![Some(1), Some(1)]);
    }
}
