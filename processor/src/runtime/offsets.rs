//! Which offset of a partition may be committed: never past an event that is not finished.

use std::collections::{BTreeSet, HashMap, VecDeque};

/// Offsets of one partition assignment. Events finish out of order (different keys run
/// concurrently); the commit point is the first unfinished offset.
///
/// Offsets arrive in increasing order, so they are kept in a queue in that order, each with
/// whether it finished: receiving appends, finishing marks, and the commit point is the
/// front once finished ones are taken off it. Nothing is allocated per offset once the
/// queue has grown to the partition's backlog.
#[derive(Debug)]
pub(crate) struct PartitionOffsets {
    pub generation: u64,
    /// Received offsets in increasing order, each with whether it finished; the front is
    /// never finished.
    pending: VecDeque<(i64, bool)>,
    /// How many entries of `pending` finished (they wait behind an unfinished one).
    finished_behind: usize,
    /// Highest offset received, plus one.
    next: Option<i64>,
    stored: Option<i64>,
}

/// Finished entries kept behind an unfinished one before they are swept out: a key held up
/// by retries must not let its partition's queue grow with everything finished after it.
const SWEEP_AFTER: usize = 1024;

impl PartitionOffsets {
    fn new(generation: u64) -> Self {
        PartitionOffsets {
            generation,
            pending: VecDeque::new(),
            finished_behind: 0,
            next: None,
            stored: None,
        }
    }

    pub fn received(&mut self, offset: i64) {
        match self.pending.back() {
            None => self.pending.push_back((offset, false)),
            Some(&(last, _)) if last < offset => self.pending.push_back((offset, false)),
            // Out of order (not how a partition is read, but not to be lost either).
            Some(_) => match self.pending.binary_search_by_key(&offset, |&(o, _)| o) {
                Ok(at) => {
                    if std::mem::replace(&mut self.pending[at].1, false) {
                        self.finished_behind -= 1;
                    }
                }
                Err(at) => self.pending.insert(at, (offset, false)),
            },
        }
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// Marks `offset` finished; the new commit point (the offset to resume from) when it
    /// moved forward.
    pub fn finished(&mut self, offset: i64) -> Option<i64> {
        if let Ok(at) = self.pending.binary_search_by_key(&offset, |&(o, _)| o)
            && !self.pending[at].1
        {
            self.pending[at].1 = true;
            self.finished_behind += 1;
        }
        while let Some(&(_, true)) = self.pending.front() {
            self.pending.pop_front();
            self.finished_behind -= 1;
        }
        if self.finished_behind > SWEEP_AFTER && self.finished_behind * 2 > self.pending.len() {
            self.pending.retain(|&(_, finished)| !finished);
            self.finished_behind = 0;
        }
        let point = self.pending.front().map(|&(o, _)| o).or(self.next)?;
        if self.stored.is_some_and(|stored| stored >= point) {
            return None;
        }
        self.stored = Some(point);
        Some(point)
    }
}

/// The partitions this consumer holds, each tagged with the generation of its assignment,
/// so results of work from before a revoke are not stored for a later assignment. By topic
/// first, in a list (a consumer reads a few topics), so the per-record calls find a topic by
/// `&str` with neither a hash nor an allocation.
#[derive(Debug, Default)]
pub(crate) struct Assignments {
    partitions: Vec<(String, HashMap<i32, PartitionOffsets>)>,
    assigned: BTreeSet<(String, i32)>,
    next_generation: u64,
}

impl Assignments {
    fn topic(&self, topic: &str) -> Option<&HashMap<i32, PartitionOffsets>> {
        self.partitions
            .iter()
            .find(|(name, _)| name == topic)
            .map(|(_, partitions)| partitions)
    }

    fn topic_mut(&mut self, topic: &str) -> Option<&mut HashMap<i32, PartitionOffsets>> {
        self.partitions
            .iter_mut()
            .find(|(name, _)| name == topic)
            .map(|(_, partitions)| partitions)
    }

    fn get_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionOffsets> {
        self.topic_mut(topic)?.get_mut(&partition)
    }

    /// The partition's offsets, made for a new generation when there are none.
    fn entry(&mut self, topic: &str, partition: i32) -> &mut PartitionOffsets {
        let generation = self.next_generation + 1;
        let index = match self.partitions.iter().position(|(name, _)| name == topic) {
            Some(index) => index,
            None => {
                self.partitions.push((topic.to_string(), HashMap::new()));
                self.partitions.len() - 1
            }
        };
        let offsets = self.partitions[index]
            .1
            .entry(partition)
            .or_insert_with(|| PartitionOffsets::new(generation));
        if offsets.generation == generation {
            self.next_generation = generation;
        }
        offsets
    }

    /// Registers a received offset; returns the generation to finish it with.
    pub fn received(&mut self, topic: &str, partition: i32, offset: i64) -> u64 {
        let offsets = self.entry(topic, partition);
        offsets.received(offset);
        offsets.generation
    }

    /// Marks an offset finished; the commit point to store, if it moved.
    pub fn finished(
        &mut self,
        topic: &str,
        partition: i32,
        generation: u64,
        offset: i64,
    ) -> Option<i64> {
        let offsets = self.get_mut(topic, partition)?;
        if offsets.generation != generation {
            return None;
        }
        offsets.finished(offset)
    }

    /// The generation of an assigned partition's current assignment, made when the
    /// partition is assigned but nothing of it was received yet.
    pub fn current(&mut self, topic: &str, partition: i32) -> Option<u64> {
        if !self.assigned.contains(&(topic.to_string(), partition)) {
            return None;
        }
        Some(self.entry(topic, partition).generation)
    }

    pub fn is_current(&self, topic: &str, partition: i32, generation: u64) -> bool {
        self.topic(topic)
            .and_then(|partitions| partitions.get(&partition))
            .is_some_and(|p| p.generation == generation)
    }

    pub fn assign(&mut self, topic: &str, partition: i32) {
        self.assigned.insert((topic.to_string(), partition));
    }

    /// Forgets a revoked partition: work still running for it will not be stored.
    pub fn revoke(&mut self, topic: &str, partition: i32) {
        if let Some(partitions) = self.topic_mut(topic) {
            partitions.remove(&partition);
        }
        self.assigned.remove(&(topic.to_string(), partition));
    }

    /// The partitions assigned to this consumer now.
    pub fn assigned(&self) -> Vec<(String, i32)> {
        self.assigned.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_point_never_passes_an_unfinished_offset() {
        let mut p = PartitionOffsets::new(1);
        for offset in 10..15 {
            p.received(offset);
        }
        assert_eq!(p.finished(12), Some(10), "10 is still running");
        assert_eq!(p.finished(11), None);
        assert_eq!(p.finished(10), Some(13));
        assert_eq!(p.finished(14), None, "13 still running");
        assert_eq!(p.finished(13), Some(15));
    }

    /// The same answers as a set of unfinished offsets, whatever the order of events.
    #[test]
    fn commit_point_matches_a_set_of_unfinished_offsets() {
        use proptest::prelude::*;
        proptest!(|(steps in proptest::collection::vec((0i64..3000, any::<bool>()), 1..4000))| {
            let mut p = PartitionOffsets::new(1);
            let mut model: BTreeSet<i64> = BTreeSet::new();
            let mut next = None::<i64>;
            let mut stored = None::<i64>;
            let mut received = 0;
            for (pick, receive) in steps {
                if receive || model.is_empty() {
                    // Mostly in order, now and then one from before.
                    let offset = if pick % 7 == 0 { pick } else { received };
                    received += 1;
                    p.received(offset);
                    model.insert(offset);
                    next = Some(next.map_or(offset + 1, |n: i64| n.max(offset + 1)));
                } else {
                    let offset = *model.iter().nth(pick as usize % model.len()).unwrap_or(&0);
                    model.remove(&offset);
                    let point = model.first().copied().or(next);
                    let expected = match point {
                        Some(point) if stored.is_none_or(|s| s < point) => {
                            stored = Some(point);
                            Some(point)
                        }
                        _ => None,
                    };
                    prop_assert_eq!(p.finished(offset), expected);
                }
            }
        });
    }

    #[test]
    fn results_from_an_old_assignment_are_ignored() {
        let mut a = Assignments::default();
        let old = a.received("t", 0, 5);
        a.revoke("t", 0);
        let new = a.received("t", 0, 5);
        assert_ne!(old, new);
        assert_eq!(a.finished("t", 0, old, 5), None);
        assert!(!a.is_current("t", 0, old));
        assert_eq!(a.finished("t", 0, new, 5), Some(6));
    }
}
