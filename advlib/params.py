"""Load a notebook's parameters from a YAML profile plus overrides into a validated pydantic model.

Every error names the offending key and the allowed values, and is raised before any work starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from .attacks.spec import AttackSpec
from .runtime import DEVICE_CHOICES, PUBLISH_ENV, contained_path, project_root, publishing
from .schema import Strict, one_of

PROFILES = ("ci", "default", "paper")
SCHEMAS: dict[str, type[Params]] = {}


class ParamsError(ValueError):
    """A profile or override that does not fit the notebook's parameter schema."""


def _require_known(kind: str, names: Sequence[str], allowed: Sequence[str]) -> None:
    """Raise naming the unknown entries of `names` and the allowed ones."""
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"unknown {kind} {unknown}; allowed: {', '.join(allowed)}")


class Params(Strict):
    """Keys every notebook shares: seed, device, CPU threads and the float dtype of models and images (the `ci`
    profiles use float64, so that their printed numbers are the same on every CPU)."""

    seed: int = Field(default=0, ge=0)
    device: str = "auto"
    threads: int | None = Field(default=2, ge=1)
    dtype: Literal["float32", "float64"] = "float32"  # advlib.runtime.DTYPES

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device.split(":")[0] not in DEVICE_CHOICES:
            raise ValueError(f"device {device!r} is not allowed; choose one of {', '.join(DEVICE_CHOICES)} or 'cuda:N'")
        return device


def register_schema(stem: str) -> Callable[[type[Params]], type[Params]]:
    """Class decorator: make `cls` the parameter schema of notebook `stem`."""

    def decorate(cls: type[Params]) -> type[Params]:
        SCHEMAS[stem] = cls
        return cls

    return decorate


def _known_model_name(name: str) -> str:
    """`name` if it is a registered model, else a ValueError listing the allowed ones (TrainSpec, PretrainedSpec)."""
    from .models import list_models

    return one_of("model", name, list_models())


class TrainSpec(Strict):
    """How a classifier is trained (clean training unless `adversary` is set)."""

    model: str = "lenet5"
    model_options: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(default=2, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0)
    schedule: Literal["constant", "cosine", "step", "multistep", "triangle"] = "constant"
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(default=0.1, gt=0, le=1)
    adversary: AttackSpec | None = None
    adv_weight: float = Field(default=1.0, ge=0, le=1)
    augment: Literal["none", "crop_flip"] = "none"  # crop_flip: CIFAR's random 4-pixel-pad crop + horizontal flip

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        return _known_model_name(name)

    @model_validator(mode="after")
    def _milestones_for_multistep(self) -> TrainSpec:
        if self.schedule == "multistep" and not self.milestones:
            raise ValueError("schedule 'multistep' needs milestones (epochs at which the lr is multiplied by gamma)")
        if self.milestones and self.schedule != "multistep":
            raise ValueError(f"milestones are only used by schedule 'multistep', not {self.schedule!r}")
        return self


class DataSpec(Strict):
    """Which dataset and how many images of each split."""

    name: str = "mnist5k"
    n_train: int | None = Field(default=None, ge=1)
    n_test: int | None = Field(default=None, ge=1)
    download: bool = Field(default=False, json_schema_extra={"identity": False})  # how, not what: not in cache keys

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        from .data import list_datasets

        return one_of("dataset", name, list_datasets())


class EpsCurveSpec(Strict):
    attack: AttackSpec
    eps: list[float] = Field(min_length=1)

    @field_validator("eps")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        bad = [v for v in values if v <= 0]
        if bad:
            raise ValueError(f"every eps must be > 0, got {bad}")
        return values


class StepsCurveSpec(Strict):
    attack: AttackSpec
    steps: int = Field(ge=1)


@register_schema("quickstart")
class QuickstartParams(Params):
    """00_quickstart: train LeNet-5, attack it with a suite, draw the standard plots."""

    data: DataSpec = DataSpec()
    train: TrainSpec = TrainSpec()
    n_eval: int = Field(default=100, ge=1)
    attacks: list[AttackSpec] = Field(min_length=1)  # results are labelled name@eps, so those must differ
    eps_curve: EpsCurveSpec
    steps_curve: StepsCurveSpec
    grid_images: int = Field(default=4, ge=1)

    @field_validator("attacks")
    @classmethod
    def _distinct_labels(cls, attacks: list[AttackSpec]) -> list[AttackSpec]:
        from .attacks.spec import labelled_specs

        labelled_specs(attacks)
        return attacks


class MixGenSpec(Strict):
    """Training of one mixture-of-generators system (Sections 3.2, 4.1, 4.4 of the paper)."""

    identity_epochs: int = Field(default=10, ge=1)
    train_epochs: int = Field(default=100, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    zero_fraction: float = Field(default=0.05, ge=0, lt=1)


@register_schema("mixture_of_generators")
class MixtureOfGeneratorsParams(Params):
    """01_mixture_of_generators: attacks of Table 1, the attack sets of Table 3, budgets and repeats."""

    data: DataSpec = DataSpec()
    classifier: TrainSpec = TrainSpec()
    attacks: dict[str, AttackSpec] = Field(min_length=1)
    attack_sets: dict[int, list[str]] = Field(min_length=1)
    n_success: int = Field(default=128, ge=1)
    n_canonical: int = Field(ge=1)
    n_transformed: int = Field(ge=1)
    n_test: int = Field(ge=1)
    mixture: MixGenSpec = MixGenSpec()
    joint_repeats: int = Field(default=2, ge=1)
    faster_repeats: int = Field(default=10, ge=1)
    expertise_faster_repeats: int = Field(default=3, ge=0)

    @model_validator(mode="after")
    def _sets_name_known_attacks(self) -> MixtureOfGeneratorsParams:
        for size, names in self.attack_sets.items():
            unknown = [n for n in names if n not in self.attacks]
            if unknown:
                raise ValueError(
                    f"attack_sets.{size} names unknown attacks {unknown}; allowed: {', '.join(self.attacks)}"
                )
            if len(names) != size:
                raise ValueError(f"attack_sets.{size} must list {size} attacks, got {len(names)}")
        return self


class PretrainedSpec(Strict):
    """A network used as published, without training here (e.g. torchvision ResNet-50 with ImageNet weights)."""

    model: str
    model_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        return _known_model_name(name)


class ArchitectureSpec(Strict):
    """One network REGroup dissects: trained here (`train`) or pretrained (`pretrained`); `layers` picks the
    voters (None: every Conv2d and Linear layer)."""

    train: TrainSpec | None = None
    pretrained: PretrainedSpec | None = None
    layers: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> ArchitectureSpec:
        if (self.train is None) == (self.pretrained is None):
            raise ValueError("give exactly one of 'train' (a network trained here) or 'pretrained' (used as published)")
        return self


class RegroupStatsSpec(Strict):
    """The subset S of correctly classified training images behind the class-conditional mixtures (Section 3.1)."""

    per_class: int = Field(default=50, ge=1)
    weights: Literal["softmax", "equal"] = "softmax"
    n_pool: int | None = Field(default=None, ge=1)
    on_empty_class: Literal["error", "uniform"] = "error"
    # where a voter's pre-activation is read: the ReLU's input (after BN / residual add) or the conv output
    voter_point: Literal["preactivation", "conv_output"] = "preactivation"


class TimingSpec(Strict):
    """Table 6: the median of `repeats` timed batches of `batch_size` images after one warm-up."""

    batch_size: int = Field(default=32, ge=1)
    repeats: int = Field(default=5, ge=1)


@register_schema("regroup")
class RegroupParams(Params):
    """02_regroup: networks, the statistics subset, the k rule, the sample sets and every attack of Tables 1-5."""

    data: DataSpec = DataSpec()
    architectures: dict[str, ArchitectureSpec] = Field(min_length=1)
    stats: RegroupStatsSpec = RegroupStatsSpec()
    k: int | None = Field(default=None, ge=1)
    k_threshold: float = Field(default=0.75, ge=0, le=1)
    n_test: int | None = Field(default=None, ge=1)
    n_select: int = Field(ge=1)
    n_clean: int = Field(ge=1)
    n_untargeted: int = Field(ge=1)
    n_targeted: int = Field(ge=1)
    n_spsa: int = Field(ge=1)
    table1_attack: AttackSpec
    eps_curve: EpsCurveSpec
    paper_eps: list[float] = Field(min_length=1)
    untargeted: dict[str, AttackSpec] = Field(min_length=1)
    targeted: dict[str, AttackSpec] = Field(min_length=1)
    high_confidence: dict[str, AttackSpec] = Field(min_length=1)
    min_confidence: float = Field(default=0.9, gt=0, lt=1)
    eps_search_steps: int = Field(default=0, ge=0)  # PGD: bisections for each image's smallest eps (0: none)
    # Table 1, Figure 2 and Table 2's PGD: "minimal" = foolbox 2's protocol (each image's smallest eps, first fooling
    # iterate), "fixed" = the last iterate of a run at the table's eps
    pgd_protocol: Literal["minimal", "fixed"] = "minimal"
    spsa: dict[str, AttackSpec] = Field(min_length=1)
    adaptive: AttackSpec
    timing: TimingSpec = TimingSpec()

    @model_validator(mode="after")
    def _consistent(self) -> RegroupParams:
        if len(self.paper_eps) != len(self.eps_curve.eps):
            raise ValueError(
                f"paper_eps must give the paper's value of each of the {len(self.eps_curve.eps)} "
                f"eps_curve.eps; got {len(self.paper_eps)}"
            )
        untargeted = [name for name, spec in self.targeted.items() if not spec.targeted]
        if untargeted:
            raise ValueError(f"targeted attacks {untargeted} must set targeted: true (Table 3 is targeted)")
        targeted = [name for name, spec in self.untargeted.items() if spec.targeted]
        if targeted:
            raise ValueError(f"untargeted attacks {targeted} must not set targeted (Table 2 is untargeted)")
        return self


class StrongestSpec(Strict):
    """Appendix A's strongest adversary: PGD on the CW margin loss, steps doubled from `start_steps` until the
    accuracy stops falling (at most `max_steps`)."""

    attack: AttackSpec
    start_steps: int = Field(default=25, ge=1)
    max_steps: int = Field(default=1600, ge=1)


# the systems of Strength in Numbers' Table 1 (their recipes: defenses.ensemble_at.SYSTEMS, which must match)
SIN_SYSTEMS = (
    "Baseline",
    "Ensemble2",
    "Ensemble4",
    "SingleAdv",
    "DoubleAdv",
    "Ensemble2Adv",
    "Ensemble4Adv",
    "Separate2Adv",
)


@register_schema("strength_in_numbers")
class StrengthInNumbersParams(Params):
    """03_strength_in_numbers: the model family, Algorithm 1's training, the evaluation job and Appendix A."""

    data: DataSpec = DataSpec()
    train: TrainSpec
    double_options: dict[str, Any] = Field(min_length=1)
    train_attack: AttackSpec
    rho: float = Field(default=1.0, ge=0)
    systems: list[str] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    n_eval: int = Field(ge=1)
    eval_attacks: dict[str, AttackSpec] = Field(min_length=1)
    blackbox_sources: list[TrainSpec] = Field(min_length=1)
    blackbox_attack: AttackSpec
    steps_curve: StepsCurveSpec
    long_attacks: dict[str, AttackSpec] = Field(min_length=1)
    strongest: StrongestSpec
    transfer_steps: list[int] = Field(min_length=1)

    @field_validator("systems")
    @classmethod
    def _known_systems(cls, names: list[str]) -> list[str]:
        _require_known("systems", names, SIN_SYSTEMS)
        return names

    @model_validator(mode="after")
    def _train_without_adversary(self) -> StrengthInNumbersParams:
        if self.train.adversary is not None:
            raise ValueError("train.adversary must be empty: adversarial systems use train_attack (Algorithm 1)")
        return self


class CriticSpec(Strict):
    """The Adversary Critic defense's training (Section 5): lambda per network, Adam lrs, halving, attack unrolling."""

    weight: dict[str, float] = Field(min_length=1)
    epochs: int = Field(ge=1)
    pretrain_epochs: int = Field(default=1, ge=0)
    lr_classifier: float = Field(default=5e-4, gt=0)
    lr_critic: float = Field(default=1e-3, gt=0)
    halve_every: int = Field(default=40, ge=1)
    steps: int = Field(default=5, ge=1)
    overshoot: float = Field(default=0.05, ge=0)


class BaselineSpec(Strict):
    """The baselines' settings: FGSM adversarial training, VAT and L2 margin maximisation."""

    at_attack: AttackSpec
    at_weight: float = Field(default=0.5, ge=0, le=1)
    vat_eps: float = Field(default=2.0, gt=0)
    vat_weight: float = Field(default=1.0, ge=0)
    margin_weight: float = Field(default=0.1, ge=0)


class FigureSpec(Strict):
    """Which trained model a figure shows (network, defense; the first seed) and the C&W attack it uses."""

    network: str
    defense: Literal["reference", "at", "vat", "margin", "critic"] = "critic"
    attack: AttackSpec
    confidence: float = Field(default=0.95, gt=0, lt=1)
    n_images: int = Field(default=10, ge=1)


class HumanStudySpec(Strict):
    """Table 2's study: images per model, assignment size, the proxy annotator and, once collected, the answers.
    The proxy's members and the nearest-neighbour annotator learn from the first `proxy_n_train` training images that
    no studied model sees (None: all of them)."""

    n_images: int = Field(ge=1)
    per_assignment: int = Field(default=25, ge=1)
    attack: AttackSpec
    proxy: list[TrainSpec] = Field(min_length=1)
    proxy_n_train: int | None = Field(default=None, ge=1)
    results: str | None = None
    url_prefix: str = "https://example.org/advlib-study"
    sheets_shown: int = Field(default=2, ge=0)

    @field_validator("results")
    @classmethod
    def _inside_project(cls, text: str | None) -> str | None:
        if text is not None:
            contained_path(text, "study.results")
        return text


@register_schema("adversary_critic")
class AdversaryCriticParams(Params):
    """04_adversary_critic: networks x defenses x runs, Table 1's attacks, Figures 2 and 4 and the human study."""

    data: DataSpec = DataSpec()
    train: TrainSpec
    networks: list[str] = Field(min_length=1)
    defenses: list[Literal["reference", "at", "vat", "margin", "critic"]] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    baselines: BaselineSpec
    critic: CriticSpec
    n_eval: int = Field(ge=1)
    eval_attacks: dict[str, AttackSpec] = Field(min_length=1)
    figure2: FigureSpec
    figure4: FigureSpec
    study: HumanStudySpec

    @field_validator("networks")
    @classmethod
    def _known_networks(cls, names: list[str]) -> list[str]:
        from .models import list_models

        _require_known("networks", names, list_models())
        return names

    @model_validator(mode="after")
    def _consistent(self) -> AdversaryCriticParams:
        if self.data.n_train is None:
            raise ValueError(
                "data.n_train must be set: the proxy annotator learns from the training images the studied models do "
                "not see"
            )
        shared = [s.model for s in self.study.proxy if s.model in self.networks and not s.model_options]
        if shared:
            raise ValueError(
                f"study.proxy repeats the studied architectures {shared}; use other models than {self.networks} "
                "(or other model_options)"
            )
        missing = [n for n in self.networks if n not in self.critic.weight]
        if "critic" in self.defenses and missing:
            raise ValueError(
                f"critic.weight has no lambda for networks {missing}; give one per network in {self.networks}"
            )
        for name in ("figure2", "figure4"):
            figure = getattr(self, name)
            if figure.network not in self.networks or figure.defense not in self.defenses:
                raise ValueError(
                    f"{name} shows {figure.network}/{figure.defense}, which is not trained; "
                    f"networks: {self.networks}, defenses: {self.defenses}"
                )
        if self.train.adversary is not None:
            raise ValueError(
                "train.adversary must be empty: adversarial training is the 'at' defense (baselines.at_attack)"
            )
        return self


class ThreatSpec(Strict):
    """One norm's training threat: radius and PGD step size."""

    eps: float = Field(gt=0)
    stepsize: float = Field(gt=0)


MATNorm = Literal["linf", "l2", "l1"]
MAT_SYSTEMS = ("standard", "linf_at", "l2_at", "l1_at", "vanilla", "msd", "mat", "mat_linf", "mat_l2", "mat_msd")


@register_schema("mimo_adversarial_training")
class MATParams(Params):
    """05_mimo_adversarial_training: the systems of Tables 4 and 8, their training attacks, the evaluation attacks
    and their unions, transferability, the diagnostics and the curves."""

    data: DataSpec = DataSpec()
    train: TrainSpec
    msd_model: str
    threats: dict[MATNorm, ThreatSpec] = Field(min_length=3)
    members: list[MATNorm] = Field(min_length=1)  # sub-model m's norm; paper: [l1, l2, linf]
    iterations: int = Field(ge=1)
    ramp_epochs: int = Field(
        default=0, ge=0
    )  # training radii ramp linearly over these epochs (0: the paper's full radii)
    systems: list[str] = Field(min_length=1)
    n_eval: int = Field(ge=1)
    # every attack alone on the first n_each of the n_eval images (null: all); beyond them each group's attacks run
    # as a cascade on the survivors of its earlier ones, so clean, each group's first attack and the unions cover all
    n_each: int | None = Field(default=None, ge=1)
    eval_attacks: dict[str, AttackSpec] = Field(min_length=1)
    groups: dict[str, list[str]] = Field(min_length=1)
    transfer_attacks: dict[MATNorm, AttackSpec] = Field(min_length=1)
    diagnostics_images: int = Field(default=64, ge=1)  # Figures 1/4: training images, attacked as in training
    curve_steps: int = Field(ge=1)
    curve_eps: dict[MATNorm, list[float]] = Field(min_length=1)

    @property
    def cascaded(self) -> set[str]:
        """The attacks after the first of each group: beyond the first n_each images they run on survivors only."""
        return {a for names in self.groups.values() for a in names[1:]}

    @field_validator("systems")
    @classmethod
    def _known_systems(cls, names: list[str]) -> list[str]:
        _require_known("systems", names, MAT_SYSTEMS)
        return names

    @model_validator(mode="after")
    def _consistent(self) -> MATParams:
        from .models import list_models

        _require_known("msd_model", [self.msd_model], list_models())
        if sorted(self.members) != ["l1", "l2", "linf"]:
            raise ValueError(
                f"members={self.members} must name each of l1, l2, linf once (sub-models 1, 2, 3 in order; "
                "the paper's Section 4.1 order is [l1, l2, linf])"
            )
        unknown = sorted({a for names in self.groups.values() for a in names} - set(self.eval_attacks))
        if unknown:
            raise ValueError(
                f"groups name attacks {unknown} that eval_attacks does not define; defined: {', '.join(self.eval_attacks)}"
            )
        if self.n_each is not None and self.n_each < self.n_eval:
            grouped = {a for names in self.groups.values() for a in names}
            if set(self.eval_attacks) - grouped:
                raise ValueError(
                    f"n_each={self.n_each} < n_eval={self.n_eval} runs attacks beyond the first n_each images only "
                    f"within their group's union, but {sorted(set(self.eval_attacks) - grouped)} are in no group; "
                    f"groups: {', '.join(self.groups)}"
                )
        if self.n_each is not None and self.n_each > self.n_eval:
            raise ValueError(
                f"n_each={self.n_each} must be at most n_eval={self.n_eval} (the images it is the first of)"
            )
        if "vanilla" in self.systems and not {"linf_at", "l2_at", "l1_at"} <= set(self.systems):
            raise ValueError(
                "'vanilla' (the ensemble of the three AT models) needs linf_at, l2_at and l1_at in systems"
            )
        if self.train.adversary is not None:
            raise ValueError("train.adversary must be empty: each system's training attack comes from threats")
        if self.ramp_epochs >= self.train.epochs:
            raise ValueError(f"ramp_epochs={self.ramp_epochs} must be below train.epochs={self.train.epochs}")
        return self


def list_stems() -> list[str]:
    return sorted(SCHEMAS)


def profile_path(stem: str, profile: str | Path) -> Path:
    """params/<stem>/<profile>.yaml for a profile name, or the path itself for a YAML file."""
    text = str(profile)
    if text.endswith((".yaml", ".yml")):
        path = Path(text).expanduser().resolve()
        if not path.is_file():
            raise ParamsError(f"profile file {text!r} does not exist")
        return path
    directory = project_root() / "params" / stem
    available = sorted(p.stem for p in directory.glob("*.yaml"))
    if text not in available:
        raise ParamsError(
            f"unknown profile {text!r} for {stem!r}; allowed: {', '.join(available) or 'none found in ' + str(directory)} "
            "(or a path to a .yaml file)"
        )
    return directory / f"{text}.yaml"


def parse_override(item: str) -> tuple[str, Any]:
    """'a.b=3' -> ('a.b', 3); the value is read as YAML (numbers, booleans, lists), never evaluated as code."""
    if "=" not in item:
        raise ParamsError(f"override {item!r} is not of the form key=value")
    key, value = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ParamsError(f"override {item!r} has an empty key")
    try:
        return key, yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as error:
        raise ParamsError(
            f"override {item!r}: the value is not plain YAML data ({' '.join(str(error).split())})"
        ) from None


def _apply(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a dotted key in the raw tree; missing levels are created so the schema reports unknown keys."""
    parts = dotted.split(".")
    node: Any = tree
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, part, dotted)]
            continue
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, (dict, list)):
            raise ParamsError(
                f"override {dotted!r}: {'.'.join(parts[: depth + 1])!r} holds a value, not a block of keys"
            )
        node = child
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, dotted)] = value
    else:
        node[last] = value


def _list_index(node: list, part: str, dotted: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ParamsError(
            f"override {dotted!r}: {part!r} is not an index of a list of {len(node)} (allowed 0..{len(node) - 1})"
        )
    return int(part)


def _format_error(stem: str, schema: type[Params], error: ValidationError) -> str:
    lines = [f"invalid parameters for {stem!r}:"]
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            parent: type[BaseModel] = schema
            for part in item["loc"][:-1]:
                field = parent.model_fields.get(str(part)) if isinstance(parent, type) else None
                annotation = getattr(field, "annotation", None)
                parent = _model_in(annotation) or parent
            allowed = ", ".join(parent.model_fields)
            lines.append(f"  unknown key {loc!r}; allowed: {allowed}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"  {loc}: {message} (got {item.get('input')!r})")
    return "\n".join(lines)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found:
            return found
    return None


def load(stem: str, profile: str | Path = "ci", overrides: Mapping[str, Any] | Sequence[str] | None = None) -> Params:
    """Resolve the parameters of notebook `stem`: profile YAML, then overrides ({'a.b': v} or ['a.b=v'])."""
    if stem not in SCHEMAS:
        raise ParamsError(f"unknown notebook {stem!r}; allowed: {', '.join(list_stems())}")
    if publishing() and (overrides or str(profile) not in PROFILES):
        raise ParamsError(
            f"publishing (make reproduce, advlib run --publish, {PUBLISH_ENV}=1) writes figures/{stem}/ only for a "
            f"built-in profile ({', '.join(PROFILES)}) without overrides; profile {str(profile)!r}"
            f"{' with overrides' if overrides else ''} writes to runs/ when not published"
        )
    schema = SCHEMAS[stem]
    path = profile_path(stem, profile)
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParamsError(f"profile {str(path)!r} is not plain YAML data ({' '.join(str(error).split())})") from None
    if not isinstance(tree, dict):
        raise ParamsError(f"profile {str(path)!r} must hold a mapping of keys, got {type(tree).__name__}")
    pairs = (
        [parse_override(o) for o in overrides]
        if isinstance(overrides, (list, tuple))
        else list(cast(Mapping[str, Any], overrides or {}).items())
    )
    for key, value in pairs:
        _apply(tree, key, value)
    try:
        return schema.model_validate(tree)
    except ValidationError as error:
        raise ParamsError(_format_error(stem, schema, error)) from None
