//! Up/down with hysteresis: a node is marked down after `max_failures` consecutive failed probes
//! and returns after `min_successes` consecutive good ones, so one slow probe does not move
//! traffic and a flapping node does not keep coming back.

/// A node's health as the probes established it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Not probed yet.
    Unknown,
    /// Serving (possibly with a few recent failures, below the threshold).
    Up,
    /// Marked down.
    Down,
}

/// Counts consecutive probe results.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    state: HealthState,
    failures: u32,
    successes: u32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            state: HealthState::Unknown,
            failures: 0,
            successes: 0,
        }
    }
}

impl Health {
    /// The current state.
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records one probe. The first probe decides at once: there is nothing to protect yet.
    pub fn record(&mut self, ok: bool, max_failures: u32, min_successes: u32) {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            match self.state {
                HealthState::Unknown => self.state = HealthState::Up,
                HealthState::Down if self.successes >= min_successes => {
                    self.state = HealthState::Up
                }
                _ => {}
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            match self.state {
                HealthState::Unknown => self.state = HealthState::Down,
                HealthState::Up if self.failures >= max_failures => self.state = HealthState::Down,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis() {
        use HealthState::*;
        #[rustfmt::skip]
        let cases: &[(&str, &[bool], HealthState)] = &[
            ("never probed", &[], Unknown),
            ("first success", &[true], Up),
            ("first failure", &[false], Down),
            ("two failures stay up", &[true, false, false], Up),
            ("third failure goes down", &[true, false, false, false], Down),
            ("failures not consecutive", &[true, false, false, true, false, false], Up),
            ("one success does not bring back", &[true, false, false, false, true], Down),
            ("two successes bring back", &[true, false, false, false, true, true], Up),
            ("interrupted recovery", &[false, true, false, true], Down),
        ];
        for (why, probes, expected) in cases {
            let mut h = Health::default();
            for ok in *probes {
                h.record(*ok, 3, 2);
            }
            assert_eq!(h.state(), *expected, "{why}");
        }
    }
}
