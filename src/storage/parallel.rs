//! Spreading CPU-bound work (decoding the sets of a generation) over the machine's cores.

use std::sync::Mutex;

/// How many threads CPU-bound work is spread over: the machine's cores.
pub(super) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Applies `f` to every item on up to [`cores`] threads, each taking the next item when it is
/// done with one (sets differ in size, so a fixed split would leave a core idle), and returns
/// the results in the items' order. Runs on the calling thread alone when there is one item or
/// one core.
pub(super) fn map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let n = items.len();
    let queue = Mutex::new(items.into_iter().enumerate());
    let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).next();
    let mut done = drain(n, next, |(i, item)| (i, f(item)));
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// Applies `f` to every item `next` gives until it gives `None`, on up to `max` (at most
/// [`cores`]) threads, the calling one included; results in the order they were finished.
/// `next` may block (a channel's receiver), so items can be worked on while they still arrive.
pub(super) fn drain<T, R: Send>(
    max: usize,
    next: impl Fn() -> Option<T> + Sync,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let work = || {
        let mut out = Vec::new();
        while let Some(item) = next() {
            out.push(f(item));
        }
        out
    };
    let threads = cores().min(max);
    if threads <= 1 {
        return work();
    }
    std::thread::scope(|scope| {
        let others: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let mut out = work();
        for w in others {
            match w.join() {
                Ok(more) => out.extend(more),
                // A panic in `f` is a bug: carry it to the caller as it would have been carried
                // had `f` run there.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_the_items_order() {
        let items: Vec<u64> = (0..1000).collect();
        let out = map(items.clone(), |x| {
            // Uneven work, so threads finish out of order.
            let spin = (0..(x % 7) * 1000).fold(0u64, |a, b| a.wrapping_add(b));
            std::hint::black_box(spin);
            x * 2
        });
        assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
    }

    #[test]
    fn no_items_no_results() {
        assert!(map(Vec::<u8>::new(), |x| x).is_empty());
    }

    #[test]
    fn drain_works_on_items_while_they_arrive() {
        let (tx, rx) = std::sync::mpsc::sync_channel::<u32>(1);
        let rx = Mutex::new(rx);
        let feeder = std::thread::spawn(move || {
            for i in 0..100 {
                tx.send(i).unwrap();
            }
        });
        let mut out = drain(usize::MAX, || rx.lock().unwrap().recv().ok(), |x| x + 1);
        feeder.join().unwrap();
        out.sort_unstable();
        assert_eq!(out, (1..=100).collect::<Vec<_>>());
    }
}
