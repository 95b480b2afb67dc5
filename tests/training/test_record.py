"""What a finished run says of its final weights (londonlm.training.record)."""
from londonlm.training.record import say_which_weights


def summary(**kw):
    return {"final_weights_step": 100, "global_step": 116, "best_eval_loss": 5.5729,
            "eval_curve": [[100, 5.5729], [116, 5.6816]], **kw}


def test_final_weights_from_an_earlier_step_are_said_with_both_losses(capsys):
    say_which_weights(summary())
    assert capsys.readouterr().out.strip() == (
        "final/ holds the weights of step 100, the lowest validation loss (5.5729); the last "
        "step's was 5.6816 (--load_best_model_at_end)")


def test_nothing_is_said_of_the_last_steps_weights_and_a_missing_loss_is_left_out(capsys):
    say_which_weights(summary(final_weights_step=116))
    assert capsys.readouterr().out == ""
    say_which_weights(summary(best_eval_loss=None, eval_curve=[]))
    assert capsys.readouterr().out.strip() == ("final/ holds the weights of step 100, the lowest "
                                               "validation loss (--load_best_model_at_end)")
