//! The eviction plan of a batch into a full ring (the loop of `_admit.admit_batch`).
//!
//! Each event, in row order, takes the next of the candidates (slots, least recently updated
//! first) that no earlier row touched. The events: a new key's first row (`new_rows`,
//! ascending: key g), and the first row `first[v]` of a victim `v` that the batch touches
//! later, where its key comes back (a min-heap of those rows; `held` gives a row's slot
//! before the batch, so a row names its victim).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What a plan came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// `evictions` planned (`victims[e]` for `who[e]`: g, or -v - 1 for the key of slot v
    /// coming back); `stop` is n when every event has its slot, else the row of the first
    /// event no candidate was left for.
    Done { evictions: usize, stop: i64 },
    /// The candidates ran out and they were not all the live slots: ask again with more.
    NeedMore,
}

/// Arguments that do not describe a batch: `first[i]` not slot i's row, a candidate that is
/// not a slot, outputs shorter than the candidates.
#[derive(Debug, PartialEq, Eq)]
pub struct BadPlan {
    /// a candidate that is not a slot (an index out of range); else a table that does not
    /// hold together
    pub out_of_range: bool,
    pub message: String,
}

fn bad(message: String) -> BadPlan {
    BadPlan { out_of_range: false, message }
}

#[allow(clippy::too_many_arguments)]
pub fn plan(
    new_rows: &[i64],
    held: &[i64],
    first: &[i64],
    candidates: &[i64],
    n: i64,
    exhaustive: bool,
    victims: &mut [i64],
    who: &mut [i64],
) -> Result<Plan, BadPlan> {
    let slots = first.len();
    for (i, &f) in first.iter().enumerate() {
        if f < 0 || f > n || (f < n && held.get(f as usize) != Some(&(i as i64))) {
            return Err(bad(format!("first[{i}] is not slot {i}'s row")));
        }
    }
    if let Some(&c) = candidates.iter().find(|&&c| c < 0 || c as usize >= slots) {
        return Err(BadPlan { out_of_range: true, message: format!("candidate {c} out of range") });
    }
    if victims.len() < candidates.len() || who.len() < candidates.len() {
        return Err(bad("victims and who must be as long as the candidates".into()));
    }
    if held.len() as i64 != n || new_rows.iter().any(|&r| r < 0 || r >= n) {
        return Err(bad(format!("held must have n={n} rows, and new_rows be rows of it")));
    }
    let (mut g, mut c, mut e) = (0usize, 0usize, 0usize);
    let mut heap: BinaryHeap<Reverse<i64>> = BinaryHeap::new();
    loop {
        let from_heap = match heap.peek() {
            Some(&Reverse(top)) => g == new_rows.len() || top < new_rows[g],
            None => false,
        };
        let (row, tag) = if from_heap {
            let Reverse(row) = heap.pop().expect("peeked");
            (row, -held[row as usize] - 1)
        } else if g < new_rows.len() {
            g += 1;
            (new_rows[g - 1], (g - 1) as i64)
        } else {
            break;
        };
        // a candidate touched by a row before this one is more recent than any untouched key
        while c < candidates.len() && first[candidates[c] as usize] <= row {
            c += 1;
        }
        if c == candidates.len() {
            if !exhaustive {
                return Ok(Plan::NeedMore);
            }
            return Ok(Plan::Done { evictions: e, stop: row });
        }
        let v = candidates[c];
        c += 1;
        if first[v as usize] < n {
            heap.push(Reverse(first[v as usize])); // the victim's key comes back at its first row
        }
        victims[e] = v;
        who[e] = tag;
        e += 1;
    }
    Ok(Plan::Done { evictions: e, stop: n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_keys_take_the_least_recent_untouched_slots_and_victims_come_back() {
        // rows: 0 new key A, 1 slot 0's key (touched: not a candidate after row 1), 2 new key
        // B; candidates by recency: slot 1, slot 0, slot 2
        let held = [-1, 0, -1];
        let first = [1, 3, 3]; // slot 0 first touched at row 1; slots 1, 2 untouched (n = 3)
        let (mut victims, mut who) = ([0i64; 3], [0i64; 3]);
        let got = plan(&[0, 2], &held, &first, &[1, 0, 2], 3, true, &mut victims, &mut who);
        assert_eq!(got, Ok(Plan::Done { evictions: 2, stop: 3 }));
        // row 0 (key 0) takes slot 1; slot 0 is touched at row 1, before row 2: skipped; key 1
        // takes slot 2
        assert_eq!((&victims[..2], &who[..2]), (&[1, 2][..], &[0, 1][..]));
    }

    #[test]
    fn a_victim_coming_back_needs_a_slot_of_its_own() {
        // row 0: new key, evicts slot 0, whose key comes back at row 1 and evicts slot 1
        let held = [-1, 0];
        let first = [1, 2];
        let (mut victims, mut who) = ([0i64; 2], [0i64; 2]);
        let got = plan(&[0], &held, &first, &[0, 1], 2, true, &mut victims, &mut who);
        assert_eq!(got, Ok(Plan::Done { evictions: 2, stop: 2 }));
        assert_eq!((victims, who), ([0, 1], [0, -1]));
    }

    #[test]
    fn running_out_asks_for_more_or_stops_at_the_row() {
        let (mut victims, mut who) = ([0i64; 1], [0i64; 1]);
        let args = (&[0i64, 1][..], &[-1i64, -1][..], &[2i64][..], &[0i64][..]);
        assert_eq!(
            plan(args.0, args.1, args.2, args.3, 2, false, &mut victims, &mut who),
            Ok(Plan::NeedMore)
        );
        assert_eq!(
            plan(args.0, args.1, args.2, args.3, 2, true, &mut victims, &mut who),
            Ok(Plan::Done { evictions: 1, stop: 1 })
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        let (mut victims, mut who) = ([0i64; 1], [0i64; 1]);
        assert!(plan(&[0], &[-1], &[0], &[0], 1, true, &mut victims, &mut who).is_err());
        assert!(plan(&[0], &[-1], &[1], &[5], 1, true, &mut victims, &mut who).is_err());
    }
}
