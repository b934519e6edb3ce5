//! Chains walked by name: the L1 chain, the L0 chain (and the L0 segments
//! L1 already covers), and the snapshots the manifest and index name.

use anyhow::Result;
use distributary_core::TxId;
use distributary_core::layout::{Level, l0_key, l1_key, snapshot_key};
use distributary_core::manifest::SnapshotRef;

use super::Verifier;
use super::problem::Kind;
use super::state::{Fetched, GenState, Info, Seg};

impl Verifier<'_> {
    /// The end of the object of `level` starting at `txid`, from the chains
    /// walked or else by name.
    pub(super) async fn probe(&mut self, state: &mut GenState, level: Level, txid: TxId) -> Result<Option<TxId>> {
        let chain = if level == Level::L1 { &state.l1 } else { &state.l0 };
        if let Some(seg) = chain.get(&txid) {
            return Ok(Some(seg.max_txid));
        }
        let key = if level == Level::L1 { l1_key(state.generation, txid) } else { l0_key(state.generation, txid) };
        Ok(match self.inspect(state, &key, level, txid).await? {
            Fetched::Found(info) if info.header.max_txid >= txid => {
                self.record(state, level, txid, &key, &info);
                Some(info.header.max_txid)
            }
            _ => None,
        })
    }

    pub(super) fn record(&self, state: &mut GenState, level: Level, txid: TxId, key: &str, info: &Info) {
        let seg = Seg { max_txid: info.header.max_txid, key: key.to_string(), timestamp_ms: info.header.timestamp_ms };
        match level {
            Level::L0 => state.l0.insert(txid, seg),
            Level::L1 => state.l1.insert(txid, seg),
            Level::Snapshot => state.snapshots.insert(txid, seg),
        };
    }

    /// A snapshot named by the manifest or an index (`named_by`), checked
    /// against what it records.
    pub(super) async fn verify_snapshot(
        &mut self,
        state: &mut GenState,
        txid: TxId,
        recorded: Option<&SnapshotRef>,
        named_by: &str,
    ) -> Result<()> {
        let key = snapshot_key(state.generation, txid);
        match self.inspect(state, &key, Level::Snapshot, txid).await? {
            Fetched::Missing => self.problem(Kind::Missing, &key, format!("not found, but {named_by} names it")),
            Fetched::Bad => {}
            Fetched::Found(info) => {
                if let Some(recorded) = recorded {
                    let mut differences = Vec::new();
                    let mut differ = |field: &str, recorded: String, actual: String| {
                        if recorded != actual {
                            differences.push(format!("{field} {recorded} (the object: {actual})"));
                        }
                    };
                    differ("size", recorded.size.to_string(), info.size.to_string());
                    differ("pages", recorded.commit.to_string(), info.header.commit.to_string());
                    differ("checksum", recorded.checksum.to_string(), info.post_apply.to_string());
                    differ("timestamp", recorded.timestamp_ms.to_string(), info.header.timestamp_ms.to_string());
                    if !differences.is_empty() {
                        self.problem(Kind::Disagrees, &key, format!("{named_by} records {}", differences.join(", ")));
                    }
                }
                if info.header.flags.snapshot() && info.header.max_txid == txid {
                    self.record(state, Level::Snapshot, txid, &key, &info);
                }
            }
        }
        Ok(())
    }

    /// The L1 chain by name from `from_txid` until not found; `until` is
    /// where the manifest says it ends.
    pub(super) async fn walk_l1(&mut self, state: &mut GenState, from_txid: TxId, until: Option<TxId>) -> Result<()> {
        let mut txid = from_txid;
        loop {
            let key = l1_key(state.generation, txid);
            match self.inspect(state, &key, Level::L1, txid).await? {
                Fetched::Missing => {
                    if let Some(until) = until
                        && txid <= until
                    {
                        self.problem(
                            Kind::Missing,
                            &key,
                            format!(
                                "not found: the manifest's L1 chain [{from_txid}, {until}] stops at TXID {}",
                                TxId(txid.0.saturating_sub(1))
                            ),
                        );
                    }
                    return Ok(());
                }
                Fetched::Bad => return Ok(()),
                Fetched::Found(info) => {
                    let max_txid = info.header.max_txid;
                    if max_txid < txid {
                        return Ok(()); // misnamed (reported): the chain cannot go on
                    }
                    if let Some(until) = until
                        && txid <= until
                        && max_txid > until
                    {
                        self.problem(
                            Kind::Disagrees,
                            &key,
                            format!(
                                "holds {}, past the manifest's l1.max_txid {until}: no L1 segment ends there",
                                info.header.range()
                            ),
                        );
                    }
                    self.record(state, Level::L1, txid, &key, &info);
                    txid = max_txid.next();
                }
            }
        }
    }

    /// The L0 chain by name from `from_txid` until not found. With `newest`
    /// (the manifest's), a chain that stops before it is reported; returns
    /// the TXID where it stopped then.
    pub(super) async fn walk_l0(
        &mut self,
        state: &mut GenState,
        from_txid: TxId,
        newest: Option<TxId>,
    ) -> Result<Option<TxId>> {
        let mut txid = from_txid;
        loop {
            let key = l0_key(state.generation, txid);
            let before = TxId(txid.0.saturating_sub(1));
            let short = newest.is_some_and(|newest| txid <= newest);
            match self.inspect(state, &key, Level::L0, txid).await? {
                Fetched::Missing => {
                    if let (true, Some(newest)) = (short, newest) {
                        self.problem(
                            Kind::Missing,
                            &key,
                            format!(
                                "not found: the L0 chain from TXID {from_txid} stops at TXID {before}, before the manifest's newest TXID {newest}"
                            ),
                        );
                        return Ok(Some(before));
                    }
                    return Ok(None);
                }
                Fetched::Bad => return Ok(short.then_some(before)),
                Fetched::Found(info) => {
                    if info.header.max_txid < txid {
                        return Ok(short.then_some(before));
                    }
                    self.record(state, Level::L0, txid, &key, &info);
                    txid = info.header.max_txid.next();
                }
            }
        }
    }

    /// The L0 segments kept under L1 segments `[kept, l0_min_txid)`: each
    /// L1 segment's by name from its first TXID, until not found (retention
    /// deletes them newest first, so a prefix of them may remain); none may
    /// cross the L1 segment's end.
    pub(super) async fn walk_covered_l0(&mut self, state: &mut GenState, kept: TxId, l0_min_txid: TxId) -> Result<()> {
        let groups: Vec<(TxId, Seg)> = state.l1.range(kept..l0_min_txid).map(|(t, s)| (*t, s.clone())).collect();
        for (min_txid, l1) in groups {
            let mut txid = min_txid;
            while txid <= l1.max_txid {
                let key = l0_key(state.generation, txid);
                let Fetched::Found(info) = self.inspect(state, &key, Level::L0, txid).await? else {
                    break;
                };
                if info.header.max_txid < txid {
                    break;
                }
                if info.header.max_txid > l1.max_txid {
                    self.problem(
                        Kind::Discontinuous,
                        &key,
                        format!(
                            "holds {}, past the end of {} at TXID {}: L0 and L1 boundaries must agree",
                            info.header.range(),
                            l1.key,
                            l1.max_txid
                        ),
                    );
                    break;
                }
                self.record(state, Level::L0, txid, &key, &info);
                txid = info.header.max_txid.next();
            }
        }
        Ok(())
    }
}
