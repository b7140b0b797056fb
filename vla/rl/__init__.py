"""Q-learning on action chunks for the flow policy: rollouts with rewards (data, rollout, collect), the chunk critic
(critic, losses), sampling from the policy (sampling, best_of_n), the algo=qchunk run (learner, trainer, checkpoint,
online). Imported by train.py's dispatch and by its own entry points only; it may use vla.data, models, eval, train."""
