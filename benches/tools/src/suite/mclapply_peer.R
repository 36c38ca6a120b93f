# The batch peer of `rookery bench`: R's own parallelism over the same rows.
# Fits the models of server/src/demo_model.R ($ROOKERY_DEMO_MODEL), makes $ROWS rows with
# set.seed(7) (as Rookery's side does), prints "ready rf" (or "ready norf"), then for
# each line on stdin naming a scoring function times one batch: parallel::mclapply
# over 50,000-row chunks on $CORES cores, and prints the elapsed seconds.
suppressMessages(library(parallel))
source(Sys.getenv("ROOKERY_DEMO_MODEL"))
rows <- as.numeric(Sys.getenv("ROWS"))
cores <- as.integer(Sys.getenv("CORES"))
set.seed(7)
d <- make_features(rows)
chunks <- split(seq_len(nrow(d)), ceiling(seq_len(nrow(d)) / 50000))
cat(if (exists("rf_model")) "ready rf" else "ready norf", "\n", sep = "")
flush(stdout())
input <- file("stdin")
open(input)
while (length(fn <- readLines(input, n = 1)) > 0) {
  f <- get(fn)
  elapsed <- system.time({
    scores <- unlist(mclapply(chunks, function(i) f(d[i, ]), mc.cores = cores))
  })[["elapsed"]]
  if (length(scores) != nrow(d)) elapsed <- NA
  cat(elapsed, "\n", sep = "")
  flush(stdout())
}
