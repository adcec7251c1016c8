"""The knowledge-distillation loss (Hinton et al., 2015) with alpha as the weight of the KD term."""
import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, *,
            alpha: float, temperature: float) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y), averaged over the batch.

    The T^2 factor keeps the KD gradient's magnitude comparable across temperatures. Note that torchdistill
    and some KD scripts weight the CE term with alpha instead; here alpha is the weight of the teacher.
    """
    ce = F.cross_entropy(student_logits.float(), targets)
    if alpha == 0:
        return ce
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return alpha * t * t * kl + (1.0 - alpha) * ce
