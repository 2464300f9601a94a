//! The Lambda entry point. The handler arrives with the Lambda issue; until then this binary
//! says so instead of pretending to work.

fn main() -> std::process::ExitCode {
    eprintln!(
        "bootstrap is the AWS Lambda entry point and needs the Lambda Runtime API \
         (AWS_LAMBDA_RUNTIME_API); the handler is not built yet. Use `responder replay` locally."
    );
    std::process::ExitCode::from(1)
}
