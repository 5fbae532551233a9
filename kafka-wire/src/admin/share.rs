//! Share groups, as an administrator sees them (KIP-932): who is in the
//! group and what the broker assigned them (ShareGroupDescribe), where
//! each partition's share-partition starts (DescribeShareGroupOffsets),
//! and moving or forgetting those starts (AlterShareGroupOffsets,
//! DeleteShareGroupOffsets). Listing uses ListGroups v5's type filter;
//! deleting the whole group is [`Client::delete_group`] (DeleteGroups
//! deletes a share group and its share-partition state alike).
//!
//! ```text
//!  share-partition of topic t, partition p, in group g:
//!
//!   log start ... [start offset (SPSO)] in flight / acknowledged ... [end offset (SPEO)] ... log end
//!                  └── everything before it is done: acknowledged, archived or skipped
//!  alter_share_group_offsets(g, {t-p: n}) moves the SPSO to n (the group must be empty);
//!  delete_share_group_offsets(g, [t]) forgets t's state: the next member starts where the
//!  group config share.auto.offset.reset says
//! ```
//!
//! Every request goes to the group's coordinator (FindCoordinator, key
//! type group). The requests are built and the answers read in pure
//! functions (`build_*`, `read_*`), tested below without a broker.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::alter_share_group_offsets_request::{
    AlterShareGroupOffsetsRequestPartition, AlterShareGroupOffsetsRequestTopic,
};
use kafka_protocol::messages::delete_share_group_offsets_request::DeleteShareGroupOffsetsRequestTopic;
use kafka_protocol::messages::describe_share_group_offsets_request::{
    DescribeShareGroupOffsetsRequestGroup, DescribeShareGroupOffsetsRequestTopic,
};
use kafka_protocol::messages::{
    AlterShareGroupOffsetsRequest, AlterShareGroupOffsetsResponse, ApiKey,
    DeleteShareGroupOffsetsRequest, DeleteShareGroupOffsetsResponse,
    DescribeShareGroupOffsetsRequest, DescribeShareGroupOffsetsResponse, GroupId,
    ListGroupsRequest, ShareGroupDescribeRequest, ShareGroupDescribeResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{s, GroupListing};
use crate::client::{Client, Lane};
use crate::coordinator::CoordinatorKind;
use crate::error::{Error, KafkaCode, Result};
use crate::topic_partition::TopicPartition;

/// A share group, as [`Client::describe_share_group`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareGroupDescription {
    pub group_id: String,
    /// `Empty`, `Stable` or `Dead`.
    pub state: String,
    /// Bumped by every change of members or subscriptions.
    pub group_epoch: i32,
    /// The group epoch the current assignment was computed at.
    pub assignment_epoch: i32,
    /// The broker's assignor (`simple` unless `group.share.assignors` says
    /// otherwise).
    pub assignor: String,
    pub members: Vec<ShareGroupMember>,
}

/// One member of a share group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareGroupMember {
    /// Chosen by the member itself (KIP-932 v1: a random UUID).
    pub member_id: String,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub rack_id: Option<String>,
    pub subscribed_topics: Vec<String>,
    /// The partitions the broker assigned it. Unlike a consumer group's,
    /// a share group's partitions are shared: several members may be
    /// assigned the same one, and each record goes to one of them.
    pub assigned: Vec<TopicPartition>,
}

/// Where one share-partition starts, as DescribeShareGroupOffsets reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareGroupOffset {
    /// The share-partition start offset (SPSO): every record before it is
    /// done with (acknowledged, archived, or skipped by an offset reset);
    /// records from it on may be available, in flight or acknowledged.
    /// `None` while the share-partition has no state yet (no member has
    /// been assigned it since the group was created or its state deleted).
    pub start_offset: Option<i64>,
    /// The leader epoch the start offset was written at (`None`: unknown).
    pub leader_epoch: Option<i32>,
}

/// ListGroups' type filter for share groups (KIP-848's v5 field).
const SHARE_TYPE: &str = "share";

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_string()))
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// A partition-scoped error code with the broker's message.
fn partition_error(
    api: ApiKey,
    code: i16,
    tp: &TopicPartition,
    message: Option<&StrBytes>,
) -> Result<()> {
    match KafkaCode::try_from_code(code) {
        None => Ok(()),
        Some(code) => Err(Error::broker_for(api, code, &tp.topic, tp.partition)
            .with_message(message.map(|m| m.as_str()))),
    }
}

impl Client {
    /// Every share group on every broker (ListGroups v5 filtered by type
    /// `share`; Kafka 4.0+). A broker that speaks only ListGroups v4 or
    /// older cannot filter, and has no share groups anyway: empty.
    ///
    /// # Errors
    /// Connection errors; a broker error code.
    ///
    /// # Cancel safety
    /// Cancel safe (read only).
    pub async fn list_share_groups(&self) -> Result<Vec<GroupListing>> {
        let md = self.refresh_metadata(Some(&[])).await?;
        let req = ListGroupsRequest::default()
            .with_types_filter(vec![StrBytes::from_static_str(SHARE_TYPE)]);
        let mut out = Vec::new();
        for &broker in md.brokers.keys() {
            let conn = self.connection(broker, Lane::Control).await?;
            if conn.version(ApiKey::ListGroups).is_ok_and(|v| v < 5) {
                continue;
            }
            let resp = conn
                .send(&req, self.config().request_timeout, Duration::ZERO)
                .await?;
            crate::error::check_code(ApiKey::ListGroups, resp.error_code)?;
            out.extend(resp.groups.iter().map(|g| GroupListing {
                group_id: g.group_id.0.to_string(),
                protocol_type: s(&g.protocol_type),
                state: s(&g.group_state),
                group_type: Some(SHARE_TYPE.to_string()),
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    /// Members of a share group, with what the broker assigned each
    /// (ShareGroupDescribe v1, Kafka 4.1+).
    ///
    /// # Errors
    /// [`Error::Broker`] GROUP_ID_NOT_FOUND when no share group has this
    /// id (the broker's message says so when a group of another type has
    /// it: "Group g is not a share group."), GROUP_AUTHORIZATION_FAILED
    /// (the principal needs DESCRIBE on the group),
    /// [`Error::UnsupportedVersion`] on a broker without share groups;
    /// coordinator and connection errors.
    ///
    /// # Cancel safety
    /// Cancel safe (read only).
    pub async fn describe_share_group(&self, group: &str) -> Result<ShareGroupDescription> {
        let coordinator = self.find_coordinator(CoordinatorKind::Group, group).await?;
        let req = ShareGroupDescribeRequest::default().with_group_ids(vec![group_id(group)]);
        let resp = self
            .send_to(coordinator, Lane::Control, &req, Duration::ZERO)
            .await?;
        read_share_group_describe(resp, group)
    }

    /// The start offset of each share-partition of `group` (DescribeShareGroupOffsets
    /// v0, Kafka 4.1+): of `topics`' partitions, or of every topic the group has
    /// state for (`None`). A partition the group has no state for is left out.
    /// The answer may trail the last acknowledgements: Kafka 4.4 persists a
    /// start offset that moved with the share-partition's next state write.
    ///
    /// # Errors
    /// A group-wide [`Error::Broker`] (GROUP_ID_NOT_FOUND,
    /// GROUP_AUTHORIZATION_FAILED), or the first partition's (naming it);
    /// an unknown topic in `topics`; coordinator and connection errors.
    ///
    /// # Cancel safety
    /// Cancel safe (read only).
    pub async fn share_group_offsets(
        &self,
        group: &str,
        topics: Option<&[&str]>,
    ) -> Result<BTreeMap<TopicPartition, ShareGroupOffset>> {
        let topics = match topics {
            Some(ts) => {
                let names: Vec<String> = ts.iter().map(|t| t.to_string()).collect();
                let md = self.refresh_metadata(Some(&names)).await?;
                let mut out = Vec::new();
                for t in ts {
                    let n = md
                        .partition_count(t)
                        .ok_or_else(|| Error::Metadata(format!("topic {t} does not exist")))?;
                    out.push((t.to_string(), (0..n as i32).collect()));
                }
                Some(out)
            }
            None => None,
        };
        let coordinator = self.find_coordinator(CoordinatorKind::Group, group).await?;
        let req = build_describe_offsets(group, topics.as_deref());
        let resp = self
            .send_to(coordinator, Lane::Control, &req, Duration::ZERO)
            .await?;
        read_describe_offsets(&resp)
    }

    /// Move the start offset of share-partitions of an empty share group
    /// (AlterShareGroupOffsets v0, Kafka 4.1+), as
    /// `kafka-share-groups.sh --reset-offsets`: every record before the
    /// new start counts as done; the records from it on are delivered
    /// again (with a fresh delivery count).
    ///
    /// Each partition's answer: `Ok(())`, or an [`Error::Broker`] naming it
    /// (UNKNOWN_TOPIC_OR_PARTITION, INVALID_REQUEST for an offset outside
    /// the log).
    ///
    /// # Errors
    /// For the whole request: NON_EMPTY_GROUP while the group has members
    /// (stop them first), GROUP_ID_NOT_FOUND, GROUP_AUTHORIZATION_FAILED;
    /// coordinator and connection errors.
    ///
    /// # Cancel safety
    /// Not cancel safe in effect: the coordinator may apply the change
    /// even if the future is dropped.
    pub async fn alter_share_group_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<BTreeMap<TopicPartition, Result<()>>> {
        if offsets.is_empty() {
            return Ok(BTreeMap::new());
        }
        let coordinator = self.find_coordinator(CoordinatorKind::Group, group).await?;
        let req = build_alter_offsets(group, offsets);
        let resp = self
            .send_to(coordinator, Lane::Control, &req, Duration::ZERO)
            .await?;
        read_alter_offsets(&resp, offsets)
    }

    /// Forget an empty share group's state of `topics` (DeleteShareGroupOffsets
    /// v0, Kafka 4.1+): a member assigned them later starts where the group
    /// config `share.auto.offset.reset` says.
    ///
    /// Each topic's answer: `Ok(())` or an [`Error::Broker`] naming it
    /// (UNKNOWN_TOPIC_OR_PARTITION).
    ///
    /// # Errors
    /// For the whole request: NON_EMPTY_GROUP while the group has members,
    /// GROUP_ID_NOT_FOUND, GROUP_AUTHORIZATION_FAILED; coordinator and
    /// connection errors.
    ///
    /// # Cancel safety
    /// Not cancel safe in effect, as `alter_share_group_offsets`.
    pub async fn delete_share_group_offsets(
        &self,
        group: &str,
        topics: &[&str],
    ) -> Result<BTreeMap<String, Result<()>>> {
        if topics.is_empty() {
            return Ok(BTreeMap::new());
        }
        let coordinator = self.find_coordinator(CoordinatorKind::Group, group).await?;
        let req = DeleteShareGroupOffsetsRequest::default()
            .with_group_id(group_id(group))
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        DeleteShareGroupOffsetsRequestTopic::default()
                            .with_topic_name(topic_name(t))
                    })
                    .collect(),
            );
        let resp = self
            .send_to(coordinator, Lane::Control, &req, Duration::ZERO)
            .await?;
        read_delete_offsets(&resp, topics)
    }
}

fn read_share_group_describe(
    resp: ShareGroupDescribeResponse,
    group: &str,
) -> Result<ShareGroupDescription> {
    let g = resp.groups.into_iter().next().ok_or_else(|| {
        Error::Metadata(format!("ShareGroupDescribe returned nothing for {group}"))
    })?;
    super::request_wide(
        ApiKey::ShareGroupDescribe,
        g.error_code,
        g.error_message.as_ref(),
    )?;
    Ok(ShareGroupDescription {
        group_id: g.group_id.0.to_string(),
        state: s(&g.group_state),
        group_epoch: g.group_epoch,
        assignment_epoch: g.assignment_epoch,
        assignor: s(&g.assignor_name),
        members: g
            .members
            .into_iter()
            .map(|m| ShareGroupMember {
                member_id: s(&m.member_id),
                member_epoch: m.member_epoch,
                client_id: s(&m.client_id),
                client_host: s(&m.client_host),
                rack_id: m.rack_id.as_ref().map(s),
                subscribed_topics: m
                    .subscribed_topic_names
                    .iter()
                    .map(|t| t.0.to_string())
                    .collect(),
                assigned: m
                    .assignment
                    .topic_partitions
                    .iter()
                    .flat_map(|t| {
                        t.partitions
                            .iter()
                            .map(|p| TopicPartition::new(t.topic_name.0.to_string(), *p))
                    })
                    .collect(),
            })
            .collect(),
    })
}

/// `topics`: names with their partitions, or `None` for every topic the
/// group has state for.
fn build_describe_offsets(
    group: &str,
    topics: Option<&[(String, Vec<i32>)]>,
) -> DescribeShareGroupOffsetsRequest {
    let topics = topics.map(|ts| {
        ts.iter()
            .map(|(t, parts)| {
                DescribeShareGroupOffsetsRequestTopic::default()
                    .with_topic_name(topic_name(t))
                    .with_partitions(parts.clone())
            })
            .collect()
    });
    DescribeShareGroupOffsetsRequest::default().with_groups(vec![
        DescribeShareGroupOffsetsRequestGroup::default()
            .with_group_id(group_id(group))
            .with_topics(topics),
    ])
}

fn read_describe_offsets(
    resp: &DescribeShareGroupOffsetsResponse,
) -> Result<BTreeMap<TopicPartition, ShareGroupOffset>> {
    let api = ApiKey::DescribeShareGroupOffsets;
    let mut out = BTreeMap::new();
    for g in &resp.groups {
        super::request_wide(api, g.error_code, g.error_message.as_ref())?;
        for t in &g.topics {
            for p in &t.partitions {
                let tp = TopicPartition::new(t.topic_name.0.to_string(), p.partition_index);
                // A partition the group has never been assigned: no state.
                if p.error_code == KafkaCode::UnknownTopicOrPartition.code() && p.start_offset < 0 {
                    continue;
                }
                partition_error(api, p.error_code, &tp, p.error_message.as_ref())?;
                let offset = ShareGroupOffset {
                    start_offset: (p.start_offset >= 0).then_some(p.start_offset),
                    leader_epoch: (p.leader_epoch >= 0).then_some(p.leader_epoch),
                };
                if offset.start_offset.is_some() {
                    out.insert(tp, offset);
                }
            }
        }
    }
    Ok(out)
}

fn build_alter_offsets(
    group: &str,
    offsets: &BTreeMap<TopicPartition, i64>,
) -> AlterShareGroupOffsetsRequest {
    let mut by_topic: BTreeMap<&str, Vec<AlterShareGroupOffsetsRequestPartition>> = BTreeMap::new();
    for (tp, offset) in offsets {
        by_topic.entry(tp.topic.as_str()).or_default().push(
            AlterShareGroupOffsetsRequestPartition::default()
                .with_partition_index(tp.partition)
                .with_start_offset(*offset),
        );
    }
    AlterShareGroupOffsetsRequest::default()
        .with_group_id(group_id(group))
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, parts)| {
                    AlterShareGroupOffsetsRequestTopic::default()
                        .with_topic_name(topic_name(t))
                        .with_partitions(parts)
                })
                .collect(),
        )
}

fn read_alter_offsets(
    resp: &AlterShareGroupOffsetsResponse,
    asked: &BTreeMap<TopicPartition, i64>,
) -> Result<BTreeMap<TopicPartition, Result<()>>> {
    let api = ApiKey::AlterShareGroupOffsets;
    super::request_wide(api, resp.error_code, resp.error_message.as_ref())?;
    let mut out = BTreeMap::new();
    for t in &resp.responses {
        for p in &t.partitions {
            let tp = TopicPartition::new(t.topic_name.0.to_string(), p.partition_index);
            let answer = partition_error(api, p.error_code, &tp, p.error_message.as_ref());
            out.insert(tp, answer);
        }
    }
    for tp in asked.keys() {
        out.entry(tp.clone()).or_insert_with(|| {
            Err(Error::Metadata(format!(
                "AlterShareGroupOffsets: no answer for {tp}"
            )))
        });
    }
    Ok(out)
}

fn read_delete_offsets(
    resp: &DeleteShareGroupOffsetsResponse,
    asked: &[&str],
) -> Result<BTreeMap<String, Result<()>>> {
    let api = ApiKey::DeleteShareGroupOffsets;
    super::request_wide(api, resp.error_code, resp.error_message.as_ref())?;
    let mut out = BTreeMap::new();
    for t in &resp.responses {
        let topic = t.topic_name.0.to_string();
        let answer = match KafkaCode::try_from_code(t.error_code) {
            None => Ok(()),
            Some(code) => Err(Error::broker_with_message(
                api,
                code,
                Some(&topic),
                t.error_message.as_deref(),
            )),
        };
        out.insert(topic, answer);
    }
    for t in asked {
        out.entry(t.to_string()).or_insert_with(|| {
            Err(Error::Metadata(format!(
                "DeleteShareGroupOffsets: no answer for topic {t}"
            )))
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::alter_share_group_offsets_response::{
        AlterShareGroupOffsetsResponsePartition, AlterShareGroupOffsetsResponseTopic,
    };
    use kafka_protocol::messages::delete_share_group_offsets_response::DeleteShareGroupOffsetsResponseTopic;
    use kafka_protocol::messages::describe_share_group_offsets_response::{
        DescribeShareGroupOffsetsResponseGroup, DescribeShareGroupOffsetsResponsePartition,
        DescribeShareGroupOffsetsResponseTopic,
    };
    use kafka_protocol::messages::share_group_describe_response::{
        Assignment, DescribedGroup, Member, TopicPartitions,
    };

    use super::*;

    fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition::new(t, p)
    }

    fn st(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }

    #[test]
    fn describe_reads_members_and_their_shared_partitions() {
        let member = |id: &str, parts: Vec<i32>| {
            Member::default()
                .with_member_id(st(id))
                .with_member_epoch(3)
                .with_client_host(st("/127.0.0.1"))
                .with_subscribed_topic_names(vec![topic_name("t")])
                .with_assignment(Assignment::default().with_topic_partitions(vec![
                    TopicPartitions::default()
                        .with_topic_name(topic_name("t"))
                        .with_partitions(parts),
                ]))
        };
        let resp =
            ShareGroupDescribeResponse::default().with_groups(vec![DescribedGroup::default()
                .with_group_id(group_id("g"))
                .with_group_state(st("Stable"))
                .with_group_epoch(4)
                .with_assignment_epoch(4)
                .with_assignor_name(st("simple"))
                .with_members(vec![member("a", vec![0, 1]), member("b", vec![0, 1])])]);
        let d = read_share_group_describe(resp, "g").unwrap();
        assert_eq!(d.state, "Stable");
        assert_eq!(d.assignor, "simple");
        assert_eq!(d.members.len(), 2);
        assert_eq!(d.members[0].assigned, d.members[1].assigned, "shared");
        assert_eq!(d.members[1].subscribed_topics, ["t"]);
    }

    /// A consumer group's id: GROUP_ID_NOT_FOUND with the broker's reason.
    #[test]
    fn describe_of_another_group_type_says_so() {
        let resp =
            ShareGroupDescribeResponse::default().with_groups(vec![DescribedGroup::default()
                .with_error_code(KafkaCode::GroupIdNotFound.code())
                .with_error_message(Some(st("Group g is not a share group.")))]);
        let e = read_share_group_describe(resp, "g").unwrap_err();
        assert_eq!(e.code(), Some(KafkaCode::GroupIdNotFound));
        assert!(e.to_string().contains("not a share group"), "{e}");
    }

    #[test]
    fn offsets_without_state_are_left_out() {
        let part = |p: i32, start: i64, code: i16| {
            DescribeShareGroupOffsetsResponsePartition::default()
                .with_partition_index(p)
                .with_start_offset(start)
                .with_leader_epoch(0)
                .with_error_code(code)
        };
        let resp = DescribeShareGroupOffsetsResponse::default().with_groups(vec![
            DescribeShareGroupOffsetsResponseGroup::default().with_topics(vec![
                DescribeShareGroupOffsetsResponseTopic::default()
                    .with_topic_name(topic_name("t"))
                    .with_partitions(vec![
                        part(0, 7, 0),
                        part(1, -1, 0),
                        part(2, -1, KafkaCode::UnknownTopicOrPartition.code()),
                    ]),
            ]),
        ]);
        let got = read_describe_offsets(&resp).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[&tp("t", 0)].start_offset, Some(7));
        assert_eq!(got[&tp("t", 0)].leader_epoch, Some(0));
    }

    #[test]
    fn describe_offsets_asks_every_topic_or_the_named_ones() {
        let all = build_describe_offsets("g", None);
        assert!(all.groups[0].topics.is_none(), "null: every topic");
        let some = build_describe_offsets("g", Some(&[("t".into(), vec![0, 1])]));
        let ts = some.groups[0].topics.as_ref().unwrap();
        assert_eq!(ts[0].partitions, [0, 1]);
    }

    #[test]
    fn alter_groups_partitions_by_topic_and_reads_each_answer() {
        let offsets = BTreeMap::from([(tp("a", 0), 5), (tp("a", 1), 6), (tp("b", 0), 0)]);
        let req = build_alter_offsets("g", &offsets);
        assert_eq!(req.topics.len(), 2);
        assert_eq!(req.topics[0].partitions.len(), 2);
        assert_eq!(req.topics[0].partitions[1].start_offset, 6);

        let resp = AlterShareGroupOffsetsResponse::default().with_responses(vec![
            AlterShareGroupOffsetsResponseTopic::default()
                .with_topic_name(topic_name("a"))
                .with_partitions(vec![
                    AlterShareGroupOffsetsResponsePartition::default().with_partition_index(0),
                    AlterShareGroupOffsetsResponsePartition::default()
                        .with_partition_index(1)
                        .with_error_code(KafkaCode::InvalidRequest.code()),
                ]),
        ]);
        let got = read_alter_offsets(&resp, &offsets).unwrap();
        assert!(got[&tp("a", 0)].is_ok());
        assert_eq!(
            got[&tp("a", 1)].as_ref().unwrap_err().code(),
            Some(KafkaCode::InvalidRequest)
        );
        assert!(got[&tp("b", 0)].is_err(), "unanswered is an error");

        let busy = AlterShareGroupOffsetsResponse::default()
            .with_error_code(KafkaCode::NonEmptyGroup.code())
            .with_error_message(Some(st("The group is not empty.")));
        let e = read_alter_offsets(&busy, &offsets).unwrap_err();
        assert_eq!(e.code(), Some(KafkaCode::NonEmptyGroup));
    }

    #[test]
    fn delete_reads_each_topics_answer() {
        let resp = DeleteShareGroupOffsetsResponse::default().with_responses(vec![
            DeleteShareGroupOffsetsResponseTopic::default().with_topic_name(topic_name("a")),
            DeleteShareGroupOffsetsResponseTopic::default()
                .with_topic_name(topic_name("b"))
                .with_error_code(KafkaCode::UnknownTopicOrPartition.code()),
        ]);
        let got = read_delete_offsets(&resp, &["a", "b"]).unwrap();
        assert!(got["a"].is_ok());
        assert!(got["b"].is_err());
    }
}
