//! The metadata quorum and what it replicates: broker registrations, topics, partition
//! leadership and ISR, configs, producer-id blocks.

pub mod command;
pub mod controller;
pub mod image;
pub mod lifecycle;
pub mod node;
pub mod placement;
pub mod producer_ids;
pub mod quorum;
#[cfg(test)]
pub mod testing;

pub use command::{Command, CommandResult};
pub use image::MetadataImage;
