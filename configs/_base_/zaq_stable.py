# The stable ZAQ recipe (issue 10; README, "A ZAQ that holds up"), shared by every task's configs
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
)
methods = {'zaq': zaq_stable, 'zaq-no-feat': zaq_stable, 'zaq-no-act': zaq_stable}
