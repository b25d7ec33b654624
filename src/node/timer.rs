//! The timer thread: holds the node's lock except while it waits on its
//! condvar (`wait_until` the core's next deadline), then ticks the core.

use super::*;

impl Shared {
    pub(super) fn run_timer(&self) {
        let mut st = self.state.lock();
        while !st.stopping {
            st.raft.tick(now(self));
            self.process_ready(&mut st);
            st.timer_deadline = st.raft.tick_deadline();
            // (A deadline too far to represent is none.)
            match st.timer_deadline.and_then(|d| self.epoch.checked_add(d)) {
                Some(deadline) => {
                    self.timer.wait_until(&mut st, deadline);
                }
                None => self.timer.wait(&mut st),
            }
        }
    }
}
