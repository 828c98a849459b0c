//! Which offset of a partition may be committed: never past an event that is not finished.

use std::collections::{BTreeSet, HashMap};

/// Offsets of one partition assignment. Events finish out of order (different keys run
/// concurrently); the commit point is the first unfinished offset.
#[derive(Debug)]
pub(crate) struct PartitionOffsets {
    pub generation: u64,
    pending: BTreeSet<i64>,
    /// Highest offset received, plus one.
    next: Option<i64>,
    stored: Option<i64>,
}

impl PartitionOffsets {
    fn new(generation: u64) -> Self {
        PartitionOffsets {
            generation,
            pending: BTreeSet::new(),
            next: None,
            stored: None,
        }
    }

    pub fn received(&mut self, offset: i64) {
        self.pending.insert(offset);
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// Marks `offset` finished; the new commit point (the offset to resume from) when it
    /// moved forward.
    pub fn finished(&mut self, offset: i64) -> Option<i64> {
        self.pending.remove(&offset);
        let point = self.pending.first().copied().or(self.next)?;
        if self.stored.is_some_and(|stored| stored >= point) {
            return None;
        }
        self.stored = Some(point);
        Some(point)
    }
}

/// The partitions this consumer holds, each tagged with the generation of its assignment,
/// so results of work from before a revoke are not stored for a later assignment. Keyed by
/// topic first, so the per-record calls look topics up by `&str` and allocate nothing.
#[derive(Debug, Default)]
pub(crate) struct Assignments {
    partitions: HashMap<String, HashMap<i32, PartitionOffsets>>,
    assigned: BTreeSet<(String, i32)>,
    next_generation: u64,
}

impl Assignments {
    fn get_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionOffsets> {
        self.partitions.get_mut(topic)?.get_mut(&partition)
    }

    /// The partition's offsets, made for a new generation when there are none.
    fn entry(&mut self, topic: &str, partition: i32) -> &mut PartitionOffsets {
        let generation = self.next_generation + 1;
        let offsets = self
            .partitions
            .entry(topic.to_string())
            .or_default()
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
        self.partitions
            .get(topic)
            .and_then(|partitions| partitions.get(&partition))
            .is_some_and(|p| p.generation == generation)
    }

    pub fn assign(&mut self, topic: &str, partition: i32) {
        self.assigned.insert((topic.to_string(), partition));
    }

    /// Forgets a revoked partition: work still running for it will not be stored.
    pub fn revoke(&mut self, topic: &str, partition: i32) {
        if let Some(partitions) = self.partitions.get_mut(topic) {
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
