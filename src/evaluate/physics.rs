//! The downstream physics check: does a signal-versus-background classifier trained on generated
//! events work as well on real MC events as one trained on MC?
//!
//! The MC events are split in halves (seeded). Classifier A is trained on the first MC half,
//! classifier B on the generated events (capped to the same size); both are scored on the second
//! MC half, and their ROC AUCs (Mann-Whitney) are reported. A faithful generator gives
//! `AUC_B ~= AUC_A`.

use super::c2st::auc_mann_whitney;
use super::gbdt::{Gbdt, GbdtConfig};
use super::{EvalError, PhysicsMetrics};
use crate::engine::{Matrix, Rng};

fn rows_f64(m: &Matrix<f32>, idx: &[usize]) -> Vec<f64> {
    let mut v = Vec::with_capacity(idx.len() * m.cols());
    for &i in idx {
        v.extend(m.row(i).iter().map(|x| *x as f64));
    }
    v
}

/// Runs the physics check; labels are `> 0.5` for signal.
pub fn physics_check(
    mc: &Matrix<f32>,
    mc_labels: &[f32],
    generated: &Matrix<f32>,
    gen_labels: &[f32],
    seed: u64,
) -> Result<PhysicsMetrics, EvalError> {
    let d = mc.cols();
    if mc_labels.len() != mc.rows() || gen_labels.len() != generated.rows() || generated.cols() != d
    {
        return Err(EvalError::Shape(
            "physics check: labels and events do not match".into(),
        ));
    }
    let classes = |l: &[f32]| (l.iter().any(|v| *v > 0.5), l.iter().any(|v| *v <= 0.5));
    if classes(mc_labels) != (true, true) || classes(gen_labels) != (true, true) {
        return Err(EvalError::TooFewEvents(
            "physics check needs signal and background events in both samples".into(),
        ));
    }
    let mut idx: Vec<usize> = (0..mc.rows()).collect();
    Rng::stream(seed, 0x9415).shuffle(&mut idx);
    let half = idx.len() / 2;
    let (train_idx, test_idx) = idx.split_at(half);
    if train_idx.len() < 100 || test_idx.len() < 100 {
        return Err(EvalError::TooFewEvents(format!(
            "physics check needs at least 200 MC events, got {}",
            mc.rows()
        )));
    }
    let mut gidx: Vec<usize> = (0..generated.rows()).collect();
    Rng::stream(seed, 0x9416).shuffle(&mut gidx);
    gidx.truncate(train_idx.len());
    let y = |l: &[f32], idx: &[usize]| {
        idx.iter()
            .map(|&i| if l[i] > 0.5 { 1.0 } else { 0.0 })
            .collect::<Vec<f64>>()
    };
    let cfg = GbdtConfig::default();
    let fit = |x: &[f64], y: &[f64]| {
        Gbdt::fit(x, d, y, &cfg).ok_or_else(|| {
            EvalError::TooFewEvents("physics classifier could not be trained".into())
        })
    };
    let on_mc = fit(&rows_f64(mc, train_idx), &y(mc_labels, train_idx))?;
    let on_gen = fit(&rows_f64(generated, &gidx), &y(gen_labels, &gidx))?;
    let test_x = rows_f64(mc, test_idx);
    let test_y = y(mc_labels, test_idx);
    let auc = |model: &Gbdt| {
        let p = model.predict_proba(&test_x);
        let (mut s0, mut s1) = (Vec::new(), Vec::new());
        for (pi, yi) in p.iter().zip(&test_y) {
            if *yi > 0.5 {
                s1.push(*pi)
            } else {
                s0.push(*pi)
            }
        }
        auc_mann_whitney(&s0, &s1)
    };
    Ok(PhysicsMetrics {
        auc_trained_on_mc: auc(&on_mc),
        auc_trained_on_generated: auc(&on_gen),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize, shift: f64, seed: u64) -> (Matrix<f32>, Vec<f32>) {
        let mut rng = Rng::new(seed);
        let labels: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
        let x = Matrix::from_fn(n, 3, |i, j| {
            (rng.normal()
                + if j == 0 {
                    shift * labels[i] as f64
                } else {
                    0.0
                }) as f32
        });
        (x, labels)
    }

    #[test]
    fn faithful_generator_matches_and_useless_one_does_not() {
        let (mc, l) = sample(4000, 2.0, 1);
        let (good, lg) = sample(2000, 2.0, 2);
        let r = physics_check(&mc, &l, &good, &lg, 0).unwrap();
        assert!(r.auc_trained_on_mc > 0.8, "{r:?}");
        assert!(
            (r.auc_trained_on_mc - r.auc_trained_on_generated).abs() < 0.03,
            "{r:?}"
        );
        // A generator whose classes look alike teaches nothing about the MC separation.
        let (bad, lb) = sample(2000, 0.0, 3);
        let r2 = physics_check(&mc, &l, &bad, &lb, 0).unwrap();
        assert!(
            r2.auc_trained_on_generated < r.auc_trained_on_generated - 0.15,
            "{r2:?}"
        );
    }
}
