//! The metadata quorum and what it replicates: broker registrations, topics, partition
//! leadership and ISR, configs, producer-id blocks.

pub mod command;
pub mod image;
pub mod quorum;

pub use command::{Command, CommandResult};
pub use image::MetadataImage;
