//! Rill operator: reconciles `Cluster` and `Topic` resources (group `rill.dev`).
