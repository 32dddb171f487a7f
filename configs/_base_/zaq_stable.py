# The stable ZAQ recipe (README, "A ZAQ that holds up"), shared by every task's configs
# through _base_, so one set of settings serves ResNet-20, RetinaNet, DeepLabV3 and torchvision
# models with no per-model tuning. Each stabiliser is a named ZAQConfig option whose default is
# the official code's behaviour; each has an ablation row in results/ablations/. A model config
# adds its budget (iters, batch_size, ...) and overrides any of these by key.
zaq_stable = dict(
    # Adam whose every update moves a weight about q_lr grid steps of its own channel: a rate in the
    # units of the quantized model, the same for every model, layer and bit width; constant, so a run
    # of N iterations is the prefix of a longer one (the budget curves rely on it)
    q_optimizer='adam-grid', q_lr=0.01, lr_milestones=[],
    # Q's BN statistics stay P's, and the activation ranges set at the start stay
    q_bn_update=False, recalibrate_at_end=False,
    gen_output='valid-range',  # generated images stay within the pixel range real images have
    bns_weight=0.1,  # a BN-statistics prior keeps them on P's feature statistics
    q_params='quantized-weights', q_trust_steps=1.0,  # Q's weights move at most one grid step from P's
    # At fine grids (W >= 6 bits), where Q starts close to P and the adversarial images pull it off:
    # a proximal pull to P's weights (P) and half of each Q-step batch from the untrained G's images
    # (A). Both cost accuracy at 4 bits, where Q must move, so they stop there (README, "The bit-width
    # rule"). methods.zaq.wbits_rules=[] runs the recipe without them.
    wbits_rules=[dict(min_wbits=6, q_prox_weight=1e-3, q_anchor_fraction=0.5)],
)
methods = {'zaq': zaq_stable, 'zaq-no-feat': zaq_stable, 'zaq-no-act': zaq_stable}
# The real-data ceiling: ZAQ's Q training, every setting the same, on real training images.
methods['real-kd'] = zaq_stable
# DFQ as ZAQ's starting point trains exactly like ZAQ.
methods['dfq+zaq'] = zaq_stable
# GDFQ fine-tunes Q with the same Q-side settings as the stable ZAQ recipe (grid-scaled
# Adam, trust region, Q's BN statistics kept, valid-range images), so a gdfq row differs from a zaq
# row by the generator's objective (CE + BN statistics against P, no min-max) and Q's loss (KD + CE
# instead of D_o + D_f), not by the optimiser. GDFQ's own loss weights (bns_weight=0.1, CE weight 1,
# KD at T=1) are its method defaults (zaqbench/zaq/gdfq.py); unlike the ZAQ recipe it re-sets Q's
# activation ranges on the trained generator's images at the end (recalibrate_at_end, default True).
gdfq_stable = dict(q_optimizer='adam-grid', q_lr=0.01, lr_milestones=[], q_bn_update=False,
                   gen_output='valid-range', q_params='quantized-weights', q_trust_steps=1.0)
methods['gdfq'] = gdfq_stable
