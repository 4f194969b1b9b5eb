//! MX host ordering (RFC 5321 §5.1): preference order, equal preferences shuffled, null MX.
//! Pure: the resolver results and the random draws are inputs.

/// What an MX lookup means for delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MxPlan {
    /// Try these hosts in order.
    Hosts(Vec<String>),
    /// The domain publishes a null MX (`0 .`): it accepts no mail; fail permanently.
    NullMx,
    /// No MX records but the name exists: use the domain itself (implicit MX).
    Implicit(String),
}

/// Order MX records `(preference, exchange)`; `shuffle(n)` returns an index in `0..n`.
/// `name_exists` tells whether the domain exists when there are no MX records.
pub fn plan(
    domain: &str,
    records: &[(u16, String)],
    name_exists: bool,
    mut shuffle: impl FnMut(usize) -> usize,
) -> Option<MxPlan> {
    let mut recs: Vec<(u16, String)> = records
        .iter()
        .map(|(p, h)| (*p, h.trim_end_matches('.').to_ascii_lowercase()))
        .collect();
    if recs.len() == 1 && recs[0].1.is_empty() {
        return Some(MxPlan::NullMx);
    }
    recs.retain(|(_, h)| !h.is_empty());
    if recs.is_empty() {
        return name_exists
            .then(|| MxPlan::Implicit(domain.trim_end_matches('.').to_ascii_lowercase()));
    }
    recs.sort_by_key(|(p, _)| *p);
    // Fisher–Yates within each group of equal preference.
    let mut i = 0;
    while i < recs.len() {
        let mut j = i;
        while j < recs.len() && recs[j].0 == recs[i].0 {
            j += 1;
        }
        for k in (i + 1..j).rev() {
            let r = i + shuffle(k - i + 1) % (k - i + 1);
            recs.swap(k, r);
        }
        i = j;
    }
    let mut hosts: Vec<String> = Vec::with_capacity(recs.len());
    for (_, h) in recs {
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    Some(MxPlan::Hosts(hosts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(p: u16, h: &str) -> (u16, String) {
        (p, h.to_string())
    }

    #[test]
    fn preference_order() {
        let p = plan(
            "example.com",
            &[r(20, "b.example.com."), r(10, "A.example.com.")],
            true,
            |_| 0,
        );
        assert_eq!(
            p,
            Some(MxPlan::Hosts(vec![
                "a.example.com".into(),
                "b.example.com".into()
            ]))
        );
    }

    #[test]
    fn null_mx_and_implicit() {
        assert_eq!(
            plan("example.com", &[r(0, ".")], true, |_| 0),
            Some(MxPlan::NullMx)
        );
        assert_eq!(
            plan("example.com.", &[], true, |_| 0),
            Some(MxPlan::Implicit("example.com".into()))
        );
        assert_eq!(plan("nx.example", &[], false, |_| 0), None);
    }

    #[test]
    fn equal_preferences_are_shuffled_but_groups_stay_ordered() {
        let recs = [r(10, "a"), r(10, "b"), r(10, "c"), r(20, "z")];
        let mut seen = std::collections::HashSet::new();
        for seed in 0..50usize {
            let mut s = seed;
            let Some(MxPlan::Hosts(h)) = plan("d", &recs, true, |n| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407)
                    >> 3;
                s % n
            }) else {
                panic!()
            };
            assert_eq!(h.len(), 4);
            assert_eq!(h[3], "z");
            seen.insert(h[0].clone());
        }
        assert!(seen.len() > 1, "first host varies");
    }
}
