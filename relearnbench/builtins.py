"""The built-in plugins, registered lazily: one line each, nothing imported until used."""

import os

M, A, X = "relearnbench.methods", "relearnbench.attacks", "relearnbench.metrics"
FAKES = "RELEARNBENCH_FAKES"  # "1": the test fakes are registered too, in this process and every one it starts


def register_fakes():
    """The torch-free fakes that test the harness in seconds: a ``dummy`` method, attack and metric. Only tests
    register them (tests/conftest.py's ``fakes``, through the environment for the processes they start), so a
    user never meets them in ``ls`` or in a "known: ..." list."""
    from relearnbench.registry import ATTACKS, METHODS, METRICS

    os.environ[FAKES] = "1"
    if "dummy" in METHODS._entries:  # registered before (the environment, or an earlier call)
        return
    METHODS.register("dummy", f"{M}.dummy:Dummy", description="deterministic fake method for harness tests (no torch)")
    ATTACKS.register("dummy", f"{A}.dummy:Dummy", description="deterministic fake attack for harness tests (no torch)")
    METRICS.register("dummy", f"{X}.dummy:Dummy", higher_is_better=False,
                     description="deterministic fake score for harness tests (no torch)")


def register_all():
    from relearnbench.registry import ATTACKS, JUDGES, METHODS, METRICS, MODELS

    # -- methods -------------------------------------------------------------------------------
    METHODS.register("none", f"{M}.none:NoUnlearning", description="no unlearning: the base model as released")
    METHODS.register("esd", f"{M}.esd:ESD", description="Erased Stable Diffusion (Gandikota et al. 2023), configurable variant")
    for train in ("u", "x", "f"):
        for eta in (1, 3):
            METHODS.register(f"esd-{train}-{eta}", f"{M}.esd:ESD", preset={"train": train, "eta": float(eta)},
                             description=f"ESD-{train} with negative guidance {eta}")
    METHODS.register("salun", f"{M}.salun:SalUn", description="Saliency Unlearning (Fan et al. 2024): masked remapping loss")
    METHODS.register("uce", f"{M}.uce:UCE", description="Unified Concept Editing (Gandikota et al. 2024), closed form")
    METHODS.register("ca", f"{M}.ca:CA", description="Concept Ablation (Kumari et al. 2023): the concept's prediction matched to the anchor's")
    METHODS.register("fmn", f"{M}.fmn:FMN", description="Forget-Me-Not (Zhang et al. 2023): the concept tokens' cross-attention driven to zero")
    METHODS.register("advunlearn", f"{M}.advunlearn:AdvUnlearn",
                     description="AdvUnlearn (Zhang et al. 2024): the text encoder adversarially trained against soft prompts")
    METHODS.register("erasediff", f"{M}.erasediff:EraseDiff",
                     description="EraseDiff (Wu et al. 2024): retain loss under a forget constraint, first-order bi-level update")
    METHODS.register("scissorhands", f"{M}.scissorhands:ScissorHands",
                     description="ScissorHands (Wu and Harandi 2024): SNIP-trimmed weights re-initialised, then repaired")
    METHODS.register("spm", f"{M}.spm:SPM",
                     description="SPM (Lyu et al. 2024): a one-dimensional adapter trained to erase, latent anchoring, merged")
    METHODS.register("sdd", f"{M}.sdd:SDD",
                     description="Safe self-Distillation Diffusion (Kim et al. 2023): concept distilled to the empty prompt, EMA teacher")
    METHODS.register("rece", f"{M}.rece:RECE",
                     description="Reliable and Efficient Concept Erasure (Gong et al. 2024): UCE, then closed-form adversarial rounds")
    METHODS.register("checkpoint", f"{M}.checkpoint:Checkpoint",
                     description="an erased UNet made elsewhere: --set checkpoint.path=P (checkpoint@NAME for several)")
    METHODS.add_wrapper("meta", f"{M}.meta:Meta",
                        description="the meta-unlearning objective (Gao et al., arXiv 2410.12777) around the method")
    METHODS.add_wrapper("meta-full", f"{M}.meta:Meta", fixed={"train": "full"},
                        description="meta-unlearning with every UNet weight training for both terms, as the authors' "
                                    "scripts (esd-u-3+meta-full is scripts/esd_meta.sh; esd-u-1+meta trains ESD-u's)")
    METHODS.add_wrapper("retain", f"{M}.meta:Meta", fixed={"forget_term": False, "retain_diff": False},
                        description="the control: meta's retain terms without its meta terms")

    # -- attacks -------------------------------------------------------------------------------
    ATTACKS.register("none", f"{A}.none:NoAttack", description="no attack: the unlearned model as released")
    ATTACKS.register("ft", f"{A}.ft:Finetune", description="full UNet finetune on images of the erased concept")
    ATTACKS.register("ft_one", f"{A}.ft:OnePromptFinetune",
                     description="full UNet finetune on one harmful prompt's images (the paper's HRM-s)")
    ATTACKS.register("ft_clean", f"{A}.ft:CleanFinetune", description="full UNet finetune on benign data only (CLEAN)")
    ATTACKS.register("ft_adaptive", f"{A}.ft:AdaptiveFinetune",
                     description="finetune on concept data mixed with related benign data (against self-destruct)")
    ATTACKS.register("lora", f"{A}.lora:LoRA", description="peft LoRA finetune of UNet attention on concept images")
    ATTACKS.register("unlearndiffatk", f"{A}.unlearndiffatk:UnlearnDiffAtk",
                     description="adversarial prefix tokens against the victim's denoising loss (Zhang et al. 2024)")
    ATTACKS.register("ci", f"{A}.ci:ConceptInversion", description="concept inversion: textual inversion through the erased model")
    ATTACKS.register("p4d", f"{A}.p4d:P4D", description="P4D-N: new tokens whose unlearned prediction matches the original's (Chin et al. 2024)")
    ATTACKS.register("p4d-k", f"{A}.p4d:P4D", preset={"variant": "k"},
                     description="P4D-K: a learnable token before every 3 of the forget prompt's (Chin et al. 2024)")
    ATTACKS.register("ringabell", f"{A}.ringabell:RingABell",
                     description="Ring-A-Bell: genetic search for a prompt near the forget prompt plus a concept vector (Tsai et al. 2024)")
    # probes (Lu et al. 2025): no training, no prompt search; each with its control; axis: what N in post@N is
    eta, strength, side = ("noising η (per mille)", "completion strength (per mille; t_start = its share of the DDIM steps)",
                           "inpaint mask side (per mille of the image side)")
    ATTACKS.register("noising", f"{A}.noising:Noising", axis=eta,
                     description="noising: extra Gaussian noise at every sampling step (Lu et al. 2025)")
    ATTACKS.register("noising_benign", f"{A}.noising:Noising", preset={"prompts": "benign"}, axis=eta,
                     description="control of noising: the same noise while sampling the attacker's benign prompts")
    ATTACKS.register("completion", f"{A}.completion:Completion", axis=strength,
                     description="diffusion completion: the unlearned model denoises a noised image of the concept (Lu et al. 2025)")
    ATTACKS.register("completion_benign", f"{A}.completion:Completion", preset={"source": "benign"}, axis=strength,
                     description="control of completion: benign images noised, denoised from the forget prompts")
    ATTACKS.register("inpaint", f"{A}.inpaint:Inpaint", axis=side,
                     description="inpainting: the unlearned model fills a masked centre of an image of the concept (Lu et al. 2025)")
    ATTACKS.register("inpaint_benign", f"{A}.inpaint:Inpaint", preset={"source": "benign"}, axis=side,
                     description="control of inpaint: benign images masked, filled from the forget prompts")

    # -- metrics (direction and aggregation live here so tables need no import) ----------------
    METRICS.register("asr", f"{X}.asr:ASR", higher_is_better=False, bounds=(0, 100),
                     description="attack success rate: share of forget-prompt images the judge flags")
    METRICS.register("fid", curve=False, target=f"{X}.fid:FID", higher_is_better=False,
                     description="clean-fid of benign-prompt images against a reference set")
    METRICS.register("clip", curve=False, target=f"{X}.clip:CLIPScore", higher_is_better=True, bounds=(0, 100),
                     description="CLIP score (100 x cosine) of benign prompts and their images")
    METRICS.register("related", curve=False, target=f"{X}.related:Related", higher_is_better=True, bounds=(0, 100),
                     description="how well related / unrelated benign prompts still render (self-destruct)")
    METRICS.register("gradients", curve=False, target=f"{X}.gradients:Gradients", higher_is_better=None,
                     description="forget-loss gradient norm and forget/retain gradient cosine")

    # -- judges --------------------------------------------------------------------------------
    JUDGES.register("toy", f"{X}.judges:ToyJudge", description="the toy world's attribute classifier (shipped)")
    JUDGES.register("nudenet", f"{X}.judges:NudeNetJudge", description="NudeNet detector (ONNX, ships in the nudenet wheel)")
    JUDGES.register("imagenet", f"{X}.judges:ImageNetJudge", description="torchvision ResNet-50, top-1 in the concept's labels")
    JUDGES.register("clip_zeroshot", f"{X}.judges:CLIPZeroShotJudge", description="open_clip zero-shot: the label prompt wins")

    # -- models --------------------------------------------------------------------------------
    MODELS.register("toy", "relearnbench.models:load_toy", preset="toy",
                    description="the embedded toy world's tiny SD-architecture model (shipped)")
    MODELS.register("sd14", "relearnbench.models:load_sd", preset="sd14", hub_id="CompVis/stable-diffusion-v1-4",
                    description="Stable Diffusion 1.4 (hub cache or --set model.path=DIR)")
    MODELS.register("sd15", "relearnbench.models:load_sd", preset="sd14",
                    hub_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
                    description="Stable Diffusion 1.5 (hub cache or --set model.path=DIR)")
    MODELS.register("tiny", "relearnbench.testing:load_tiny", preset="toy",
                    description="a tiny random-weight SD architecture (tests and plugin development)")
    MODELS.register("sd14-random", "relearnbench.models:load_sd_random", preset="sd14",
                    description="full-size SD-1.4 architecture with random weights (speed benchmarks only)")
    MODELS.register("sd21", "relearnbench.models:load_sd", preset="sd21", hub_id="stabilityai/stable-diffusion-2-1",
                    description="Stable Diffusion 2.1, 768 px, v-prediction (hub cache or --set model.path=DIR)")
    MODELS.register("sd2-random", "relearnbench.models:load_sd_random", preset="sd21", architecture="sd21",
                    description="full-size SD-2.1 architecture with random weights (speed benchmarks only)")
    MODELS.register("sdxl", "relearnbench.models:load_sd", preset="sdxl",
                    hub_id="stabilityai/stable-diffusion-xl-base-1.0",
                    description="Stable Diffusion XL base 1.0, two text encoders (hub cache or --set model.path=DIR)")
    MODELS.register("sdxl-random", "relearnbench.models:load_sd_random", preset="sdxl", architecture="sdxl",
                    description="full-size SDXL architecture with random weights (speed benchmarks only)")
    MODELS.register("tiny-sdxl", "relearnbench.testing:load_tiny_sdxl", preset="toy",
                    description="a tiny random-weight SDXL architecture: two text encoders, added time ids (tests)")
    if os.environ.get(FAKES) == "1":
        register_fakes()
