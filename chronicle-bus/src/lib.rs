//! The bus: many chronicle queues under one directory, found at run time and merged.
#![deny(unsafe_op_in_unsafe_fn)]
