//! Replies kept by message id in a key-value bucket, so that a retried or
//! redelivered id gets the first reply and its actions do not run again.
