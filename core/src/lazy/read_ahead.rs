//! How far to read ahead of a missed page.

/// Read-ahead of a sequential scan doubles up to this many pages.
const MAX_READ_AHEAD: u32 = 64;

/// Which pages to fetch beside a missed one: none for a random read, a
/// window that doubles (up to 64 pages) while misses follow each other, as
/// a sequential scan's do.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadAhead {
    last: Option<u32>,
    window: u32,
}

impl ReadAhead {
    /// The pages to fetch for a miss of `pgno` in a database of `pages` pages.
    pub fn pages_for(&mut self, pgno: u32, pages: u32) -> std::ops::RangeInclusive<u32> {
        let sequential = self.last.is_some_and(|last| pgno > last && pgno <= last + self.window.max(4));
        self.window = if sequential { (self.window * 2).clamp(4, MAX_READ_AHEAD) } else { 0 };
        let last = pgno.saturating_add(self.window).min(pages.max(pgno));
        self.last = Some(last);
        pgno..=last
    }
}
