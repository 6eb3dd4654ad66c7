//! Consumer groups: the classic group protocol's coordinator and the committed
//! offsets it keeps in the compacted internal topic `__consumer_offsets`.

mod coordinator;
mod membership;
pub mod records;

pub use coordinator::{
    CommitRequest, DescribedGroup, DescribedMember, GroupCoordinator, OFFSETS_TOPIC,
};
pub use membership::{GroupConfig, JoinRequest, JoinResponse, SyncResponse};
