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
            match st.timer_deadline {
                Some(deadline) => {
                    self.timer.wait_until(&mut st, self.epoch + deadline);
                }
                None => self.timer.wait(&mut st),
            }
        }
    }
}
