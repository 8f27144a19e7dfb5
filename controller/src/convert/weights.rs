//! TrafficSplit v1alpha1 weights are Kubernetes quantities (`1`, `500m`); later versions use whole
//! numbers. Converting keeps every ratio: the weights in thousandths, divided by the largest
//! divisor of 1000 they all share, so whole quantities keep their number (`10`, `90` stay 10 and
//! 90) and fractions scale up together (`1`, `500m` become 2 and 1).

use crate::smi::fields::{quantity_weight_milli, NumberOrString};

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The divisor that turns thousandths into the smallest whole weights with the same ratios,
/// never more than 1000 (a quantity of `1` stays 1).
pub fn divisor(milli: &[u64]) -> u64 {
    milli.iter().fold(1000, |d, m| gcd(d, *m))
}

/// The whole weights for v1alpha1 `quantities`; the error names the index of the bad one.
pub fn from_quantities(quantities: &[NumberOrString]) -> Result<Vec<u64>, (usize, String)> {
    let milli = quantities
        .iter()
        .enumerate()
        .map(|(i, q)| quantity_weight_milli(q).map_err(|e| (i, e)))
        .collect::<Result<Vec<u64>, _>>()?;
    let d = divisor(&milli);
    Ok(milli.into_iter().map(|m| m / d).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> NumberOrString {
        NumberOrString::String(s.into())
    }

    #[test]
    fn whole_quantities_keep_their_number() {
        assert_eq!(from_quantities(&[q("10"), q("90")]), Ok(vec![10, 90]));
        assert_eq!(from_quantities(&[q("0"), q("1")]), Ok(vec![0, 1]));
    }

    #[test]
    fn fractions_scale_up_together_keeping_the_ratio() {
        assert_eq!(from_quantities(&[q("1"), q("500m")]), Ok(vec![2, 1]));
        assert_eq!(from_quantities(&[q("500m"), q("500m")]), Ok(vec![1, 1]));
        assert_eq!(from_quantities(&[q("1500m"), q("1")]), Ok(vec![3, 2]));
        assert_eq!(from_quantities(&[q("1m"), q("1")]), Ok(vec![1, 1000]));
        assert_eq!(from_quantities(&[q("0.25"), q("750m")]), Ok(vec![1, 3]));
    }

    #[test]
    fn all_zero_stays_zero_and_a_bad_quantity_is_named_by_index() {
        assert_eq!(from_quantities(&[q("0"), q("0")]), Ok(vec![0, 0]));
        let err = from_quantities(&[q("1"), q("abc")]).unwrap_err();
        assert_eq!(err.0, 1);
        assert!(err.1.contains("abc"), "{}", err.1);
    }
}
