//! Sorting through one instantiation of the standard library's sort.
//!
//! Every element type a slice is sorted as adds its own copy of the
//! standard sort (pattern-defeating quicksort with its small-sort
//! networks, some 3 KB of wasm each), which the wasm reader pays per call
//! site. Sorting `(key, position)` pairs instead needs one copy for every
//! caller.

/// `items` in ascending order of `key`; items with equal keys keep their
/// order.
pub fn sorted_by_key<T>(items: Vec<T>, key: impl Fn(&T) -> u128) -> Vec<T> {
    let mut order: Vec<(u128, usize)> = items.iter().enumerate().map(|(at, item)| (key(item), at)).collect();
    // The positions make every pair distinct: unstable is stable here.
    order.sort_unstable();
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    order.into_iter().map(|(_, at)| slots[at].take().expect("each position once")).collect()
}

#[cfg(test)]
mod tests {
    use super::sorted_by_key;

    #[test]
    fn sorts_by_key_and_keeps_equal_keys_in_order() {
        let items = vec![(3, 'a'), (1, 'b'), (3, 'c'), (2, 'd'), (1, 'e')];
        let sorted = sorted_by_key(items, |&(key, _)| key as u128);
        assert_eq!(sorted, vec![(1, 'b'), (1, 'e'), (2, 'd'), (3, 'a'), (3, 'c')]);
        assert!(sorted_by_key(Vec::<u8>::new(), |&b| u128::from(b)).is_empty());
    }
}
