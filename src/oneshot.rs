//! A channel for one value, from any thread to the thread that made it,
//! which sleeps until the value comes: no spinning, one wake-up.
//!
//! Why not a `crossbeam` channel of capacity 1: a receiver that finds it
//! empty spins and then calls `sched_yield` several times before it
//! sleeps. Issue 24's profile found 64 connection threads waiting for
//! their writes' answers that way making 2.3 `sched_yield` calls per
//! write, each handing the CPU to another spinner, on a machine whose two
//! cores the cluster needs. Here the receiver parks at once
//! (`std::thread::park_timeout`, a futex wait) and the sender unparks it.

use std::sync::Arc;
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Makes a channel whose receiver is the calling thread: only it may wait
/// on the [`Receiver`].
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Slot {
        value: Mutex::new(State::Empty),
        receiver: thread::current(),
    });
    (Sender(Some(slot.clone())), Receiver(slot))
}

struct Slot<T> {
    value: Mutex<State<T>>,
    receiver: Thread,
}

enum State<T> {
    Empty,
    Sent(T),
    /// The sender was dropped without sending.
    Dropped,
    /// The receiver took its value.
    Taken,
}

/// The sending half; sends at most once. Dropping it unsent tells the
/// receiver ([`RecvError::Disconnected`]).
pub struct Sender<T>(Option<Arc<Slot<T>>>);

impl<T> Sender<T> {
    pub fn send(mut self, value: T) {
        let slot = self.0.take().expect("sent once");
        *slot.value.lock() = State::Sent(value);
        slot.receiver.unpark();
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            *slot.value.lock() = State::Dropped;
            slot.receiver.unpark();
        }
    }
}

/// The receiving half, for the thread that called [`channel`].
pub struct Receiver<T>(Arc<Slot<T>>);

#[derive(Debug, PartialEq, Eq)]
pub enum RecvError {
    Timeout,
    Disconnected,
}

impl<T> Receiver<T> {
    /// Waits at most `timeout` for the value.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvError> {
        assert_eq!(
            thread::current().id(),
            self.0.receiver.id(),
            "only the thread that made a oneshot channel waits on it"
        );
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut value = self.0.value.lock();
                match std::mem::replace(&mut *value, State::Taken) {
                    State::Sent(v) => return Ok(v),
                    State::Dropped | State::Taken => return Err(RecvError::Disconnected),
                    State::Empty => *value = State::Empty,
                }
            }
            // Parking may end early (a stray unpark, or none at all): the
            // loop looks again.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RecvError::Timeout);
            }
            thread::park_timeout(left);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_sent_from_another_thread_arrives() {
        let (tx, rx) = channel();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            tx.send(7);
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(7));
        t.join().unwrap();
    }

    #[test]
    fn a_value_sent_before_the_wait_is_there_at_once() {
        let (tx, rx) = channel();
        tx.send("x");
        assert_eq!(rx.recv_timeout(Duration::ZERO), Ok("x"));
        // Taken: nothing more will come.
        assert_eq!(
            rx.recv_timeout(Duration::ZERO),
            Err(RecvError::Disconnected)
        );
    }

    #[test]
    fn a_dropped_sender_disconnects_and_silence_times_out() {
        let (tx, rx) = channel::<u32>();
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(10)),
            Err(RecvError::Timeout)
        );
        thread::spawn(move || drop(tx)).join().unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)),
            Err(RecvError::Disconnected)
        );
    }
}
