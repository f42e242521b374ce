//! The Go names of the engine's structs, for error texts only.
//!
//! Go's `UnmarshalTypeError` names the struct holding the field
//! (`ReplicatedService.Mode.Replicated.Replicas`) and the target type
//! (`swarm.ServiceMode`); bollard's models are named after the API's paths
//! instead. Types not listed keep bollard's name in package `swarm`.

/// bollard's model name → (Go package, Go type name).
const NAMES: &[(&str, &str, &str)] = &[
    ("ServiceSpec", "swarm", "ServiceSpec"),
    ("ServiceSpecMode", "swarm", "ServiceMode"),
    ("ServiceSpecModeReplicated", "swarm", "ReplicatedService"),
    ("ServiceSpecModeReplicatedJob", "swarm", "ReplicatedJob"),
    ("ServiceSpecUpdateConfig", "swarm", "UpdateConfig"),
    ("ServiceSpecRollbackConfig", "swarm", "UpdateConfig"),
    ("TaskSpec", "swarm", "TaskSpec"),
    ("TaskSpecContainerSpec", "swarm", "ContainerSpec"),
    ("TaskSpecContainerSpecPrivileges", "swarm", "Privileges"),
    (
        "TaskSpecContainerSpecPrivilegesCredentialSpec",
        "swarm",
        "CredentialSpec",
    ),
    (
        "TaskSpecContainerSpecPrivilegesSeLinuxContext",
        "swarm",
        "SELinuxContext",
    ),
    ("TaskSpecContainerSpecDnsConfig", "swarm", "DNSConfig"),
    ("TaskSpecContainerSpecSecrets", "swarm", "SecretReference"),
    (
        "TaskSpecContainerSpecSecretsFile",
        "swarm",
        "SecretReferenceFileTarget",
    ),
    ("TaskSpecContainerSpecConfigs", "swarm", "ConfigReference"),
    (
        "TaskSpecContainerSpecConfigsFile",
        "swarm",
        "ConfigReferenceFileTarget",
    ),
    ("TaskSpecResources", "swarm", "ResourceRequirements"),
    ("ResourceObject", "swarm", "Resources"),
    ("TaskSpecRestartPolicy", "swarm", "RestartPolicy"),
    ("TaskSpecPlacement", "swarm", "Placement"),
    (
        "TaskSpecPlacementPreferences",
        "swarm",
        "PlacementPreference",
    ),
    ("TaskSpecPlacementSpread", "swarm", "SpreadOver"),
    ("TaskSpecLogDriver", "swarm", "Driver"),
    (
        "NetworkAttachmentConfig",
        "swarm",
        "NetworkAttachmentConfig",
    ),
    ("EndpointSpec", "swarm", "EndpointSpec"),
    ("EndpointPortConfig", "swarm", "PortConfig"),
    ("HealthConfig", "container", "HealthConfig"),
    ("Mount", "mount", "Mount"),
    ("MountBindOptions", "mount", "BindOptions"),
    ("MountVolumeOptions", "mount", "VolumeOptions"),
    ("MountTmpfsOptions", "mount", "TmpfsOptions"),
    ("SwarmSpec", "swarm", "Spec"),
    ("SwarmSpecOrchestration", "swarm", "OrchestrationConfig"),
    ("SwarmSpecRaft", "swarm", "RaftConfig"),
    ("SwarmSpecDispatcher", "swarm", "DispatcherConfig"),
    ("SwarmSpecCaConfig", "swarm", "CAConfig"),
    ("SwarmSpecEncryptionConfig", "swarm", "EncryptionConfig"),
    ("SwarmSpecTaskDefaults", "swarm", "TaskDefaults"),
    ("SwarmInitRequest", "swarm", "InitRequest"),
    ("NetworkCreateRequest", "types", "NetworkCreateRequest"),
];

fn lookup(model: &str) -> Option<&'static (&'static str, &'static str, &'static str)> {
    NAMES.iter().find(|(name, _, _)| *name == model)
}

/// The Go type name of a bollard model.
pub fn go_struct(model: &str) -> &str {
    lookup(model).map_or(model, |(_, _, go)| go)
}

/// The Go package of a bollard model.
pub fn go_package(model: &str) -> &'static str {
    lookup(model).map_or("swarm", |(_, package, _)| package)
}

/// Integer fields that bollard types wider than Go does: the Go type and
/// its range, by the field path's end. Go refuses a literal outside the
/// range as it decodes ("cannot unmarshal number -1 into … of type
/// uint32"), so a negative port never reaches the store.
const NARROWER: &[(&[&str], &str, i128, i128)] = &[
    (&["Ports", "TargetPort"], "uint32", 0, u32::MAX as i128),
    (&["Ports", "PublishedPort"], "uint32", 0, u32::MAX as i128),
];

/// The Go integer type of the field at `path`, when it is narrower than
/// the Rust one.
pub fn go_integer(path: &[&str]) -> Option<(&'static str, i128, i128)> {
    NARROWER
        .iter()
        .find(|(suffix, ..)| path.ends_with(suffix))
        .map(|(_, go, min, max)| (*go, *min, *max))
}
