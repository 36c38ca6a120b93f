# RSclient's own call paths, timed from outside by farm-bench against any QAP1
# server on loopback that asks for no login (Rookery's anonymous identity, or a
# plain Rserve): Rscript benches/rsclient/calls.R PORT qap|ser [N]
#   qap: RS.eval.qap of a call (CMD_eval with a QAP-encoded expression)
#   ser: RS.eval (CMD_serEval of the serialized expression)
# Each run checks its last answer.
args <- commandArgs(TRUE)
n <- if (length(args) > 2L) as.integer(args[3]) else 3000L
library(RSclient)
c <- RS.connect(port = as.integer(args[1]))
invisible(RS.eval(c, x <- 41L))
if (args[2] == "qap") {
  for (i in seq_len(n)) r <- RS.eval.qap(c, quote(x + 1L))
} else {
  for (i in seq_len(n)) r <- RS.eval(c, x + 1L)
}
stopifnot(identical(r, 42L))
invisible(RS.close(c))
