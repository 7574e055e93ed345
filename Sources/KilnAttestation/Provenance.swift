import KilnMessages

/// in-toto Statement v1 carrying a SLSA Provenance v1 predicate, in the specs' exact casing.
/// https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md
/// https://slsa.dev/spec/v1.0/provenance
public struct Statement: Codable, Sendable, Equatable {
    public static let type = "https://in-toto.io/Statement/v1"
    public static let slsaPredicateType = "https://slsa.dev/provenance/v1"

    public var type: String
    public var subject: [ResourceDescriptor]
    public var predicateType: String
    public var predicate: SLSAProvenance

    enum CodingKeys: String, CodingKey {
        case type = "_type"
        case subject, predicateType, predicate
    }

    public init(subject: [ResourceDescriptor], predicate: SLSAProvenance) {
        self.type = Statement.type
        self.subject = subject
        self.predicateType = Statement.slsaPredicateType
        self.predicate = predicate
    }
}

/// in-toto ResourceDescriptor (only the fields Kiln uses).
public struct ResourceDescriptor: Codable, Sendable, Equatable {
    public var name: String?
    public var uri: String?
    public var digest: [String: String]?
    public var annotations: [String: String]?

    public init(name: String? = nil, uri: String? = nil, digest: [String: String]? = nil, annotations: [String: String]? = nil) {
        self.name = name
        self.uri = uri
        self.digest = digest
        self.annotations = annotations
    }
}

public struct SLSAProvenance: Codable, Sendable, Equatable {
    public var buildDefinition: BuildDefinition
    public var runDetails: RunDetails

    public init(buildDefinition: BuildDefinition, runDetails: RunDetails) {
        self.buildDefinition = buildDefinition
        self.runDetails = runDetails
    }

    public struct BuildDefinition: Codable, Sendable, Equatable {
        public var buildType: String
        public var externalParameters: ExternalParameters
        public var internalParameters: [String: String]
        public var resolvedDependencies: [ResourceDescriptor]

        public init(
            buildType: String, externalParameters: ExternalParameters, internalParameters: [String: String],
            resolvedDependencies: [ResourceDescriptor]
        ) {
            self.buildType = buildType
            self.externalParameters = externalParameters
            self.internalParameters = internalParameters
            self.resolvedDependencies = resolvedDependencies
        }
    }

    /// Exactly what the user sent: a repository and ref, or an archive's name and digest; and the nonce.
    public struct ExternalParameters: Codable, Sendable, Equatable {
        public var repository: String?
        public var ref: String?
        public var source: ResourceDescriptor?
        public var nonce: String
        /// The resources the build asked for (`build_config`); `internetAccess` true means the build
        /// had network and is not hermetic.
        public var buildConfig: BuildConfig?
        /// What was built (`build_options`): features, package, target, profile, Nix attribute.
        public var buildOptions: BuildOptions?

        public init(
            repository: String? = nil, ref: String? = nil, source: ResourceDescriptor? = nil, nonce: String, buildConfig: BuildConfig? = nil,
            buildOptions: BuildOptions? = nil
        ) {
            self.repository = repository
            self.ref = ref
            self.source = source
            self.nonce = nonce
            self.buildConfig = buildConfig
            self.buildOptions = buildOptions
        }

        /// Whether the build had network access (a build_config asked for it and the farm allowed it).
        public var hadNetwork: Bool { buildConfig?.internetAccess == true }
    }

    public struct RunDetails: Codable, Sendable, Equatable {
        public var builder: Builder
        public var metadata: Metadata
        public var byproducts: [ResourceDescriptor]

        public init(builder: Builder, metadata: Metadata, byproducts: [ResourceDescriptor]) {
            self.builder = builder
            self.metadata = metadata
            self.byproducts = byproducts
        }
    }

    public struct Builder: Codable, Sendable, Equatable {
        public var id: String
        public var version: [String: String]?
        /// SLSA's `builderDependencies`: for a VM worker, the image it booted (kernel, initramfs,
        /// kiln-worker) with their digests.
        public var builderDependencies: [ResourceDescriptor]?

        public init(id: String, version: [String: String]? = nil, builderDependencies: [ResourceDescriptor]? = nil) {
            self.id = id
            self.version = version
            self.builderDependencies = builderDependencies
        }
    }

    public struct Metadata: Codable, Sendable, Equatable {
        public var invocationId: String
        public var startedOn: String
        public var finishedOn: String

        public init(invocationId: String, startedOn: String, finishedOn: String) {
            self.invocationId = invocationId
            self.startedOn = startedOn
            self.finishedOn = finishedOn
        }
    }
}

/// Kiln's build type URIs, one per toolchain.
public enum BuildType {
    public static let cargo = "https://kiln.build/buildtypes/cargo@v1"
    public static let nixFlake = "https://kiln.build/buildtypes/nix-flake@v1"
    public static let nix = "https://kiln.build/buildtypes/nix@v1"
}
