# The plumber peer of docs/peers.md, for side-by-side HTTP scoring against Rookery.
# Serves the same models as server/src/demo_model.R (sourced, so both fit identical models):
#   POST /glm  and  POST /rf   body: a JSON array of records {x1..x10}
#   answer: the predictions as a JSON array of numbers, one per record.
# Run:  ROOKERY_DEMO_MODEL=server/src/demo_model.R PORT=8301 Rscript benches/peers/plumber_demo.R
# It owns nothing but this peer: no auth, no limits, loopback only.
library(plumber)

source(Sys.getenv("ROOKERY_DEMO_MODEL"))
if (!exists("rf_model")) stop("randomForest is not installed: /rf cannot be served")

# plumber's JSON parser has already turned the array of records into a data frame.
records <- function(req) {
  d <- req$body
  if (!is.data.frame(d)) stop("the body must be a JSON array of records x1..x10")
  d
}

# digits = NA: full precision, as Rookery sends; no auto_unbox, so 1 row is still an array.
predictions <- serializer_json(digits = NA, auto_unbox = FALSE)

pr() |>
  pr_post("/glm", function(req) score_glm(records(req)), serializer = predictions) |>
  pr_post("/rf", function(req) score_rf(records(req)), serializer = predictions) |>
  pr_run(port = as.integer(Sys.getenv("PORT")), host = "127.0.0.1", docs = FALSE)
