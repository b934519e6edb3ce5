use super::ReadAhead;

#[test]
fn read_ahead_grows_for_a_scan_and_stays_off_for_random_reads() {
    let mut ahead = ReadAhead::default();
    assert_eq!(ahead.pages_for(100, 10_000), 100..=100, "a first miss");
    assert_eq!(ahead.pages_for(5_000, 10_000), 5_000..=5_000, "random");
    assert_eq!(ahead.pages_for(5_001, 10_000), 5_001..=5_005, "the next page: a scan");
    assert_eq!(ahead.pages_for(5_006, 10_000), 5_006..=5_014);
    assert_eq!(ahead.pages_for(5_015, 10_000), 5_015..=5_031);
    assert_eq!(ahead.pages_for(20, 10_000), 20..=20, "a jump ends the scan");
    assert_eq!(ahead.pages_for(9_999, 10_000), 9_999..=9_999);
    assert_eq!(ahead.pages_for(10_000, 10_000), 10_000..=10_000, "never past the end");
}
