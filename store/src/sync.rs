//! `lock()` that takes a poisoned lock as it is: the writer must go on after a panic elsewhere
//! (see junction-core's `sync`, which the store does not depend on).

use std::sync::{Mutex, MutexGuard, PoisonError};

pub(crate) trait Lock<T: ?Sized> {
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> Lock<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
