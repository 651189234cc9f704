//! Picks the nodes of a new segment's quorum from the live members (`SelectNodes`, server side).
