//! One copy of each label set across a tenant's blocks and head.
//!
//! Every block decodes its own series table, so without sharing the same
//! series is a different allocation in each block. Queries merge the series
//! of several blocks (and the head) by label order; label sets that share
//! their pairs compare equal by address, while separate copies compare string
//! by string, which was a sixth of a range query over three blocks. Sharing
//! also keeps one copy of the strings in memory instead of one per block.

use std::collections::HashSet;
use std::sync::Mutex;

use tidewatch_model::Labels;

/// The label sets of one tenant's blocks and flushed head series.
#[derive(Debug, Default)]
pub(crate) struct SharedLabels {
    sets: Mutex<HashSet<Labels>>,
}

impl SharedLabels {
    /// Replaces each label set by the shared copy of it, adding those not
    /// seen before.
    pub(crate) fn share<'a>(&self, labels: impl IntoIterator<Item = &'a mut Labels>) {
        let mut sets = self.sets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for label_set in labels {
            match sets.get(label_set) {
                Some(shared) => *label_set = shared.clone(),
                None => {
                    sets.insert(label_set.clone());
                }
            }
        }
    }

    /// Forgets the label sets nothing else holds any more (their series left
    /// with a compacted or expired block).
    pub(crate) fn prune(&self) {
        let mut sets = self.sets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        sets.retain(Labels::is_shared);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sets.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_sets_end_up_sharing_one_allocation() {
        let shared = SharedLabels::default();
        let first = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let mut copy = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let mut other = Labels::from_pairs([("__name__", "up"), ("job", "b")]);
        let mut from_block = vec![first.clone()];
        shared.share(&mut from_block);
        shared.share([&mut copy, &mut other]);
        assert!(copy.same_pairs(&first), "the second copy takes the first one's pairs");
        assert_eq!(shared.len(), 2);
    }

    #[test]
    fn prune_forgets_sets_held_by_nothing_else() {
        let shared = SharedLabels::default();
        let mut kept = Labels::from_pairs([("__name__", "kept")]);
        let mut dropped = Labels::from_pairs([("__name__", "dropped")]);
        shared.share([&mut kept, &mut dropped]);
        drop(dropped);
        shared.prune();
        assert_eq!(shared.len(), 1);
        let mut again = Labels::from_pairs([("__name__", "kept")]);
        shared.share([&mut again]);
        assert!(again.same_pairs(&kept));
    }
}
