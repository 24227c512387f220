// The AWS SDK for JavaScript v3 driving batchrock: one scenario per run, results as JSON on
// stdout. Credentials come from the SDK's own chain (AWS_ACCESS_KEY_ID/... or
// AWS_BEARER_TOKEN_BEDROCK), as in any Node program. Used by tests/access/test_js_sdk.py.
import {
  BedrockClient,
  CreateModelInvocationJobCommand,
  GetModelInvocationJobCommand,
  ListModelInvocationJobsCommand,
  ListTagsForResourceCommand,
  StopModelInvocationJobCommand,
  TagResourceCommand,
  paginateListModelInvocationJobs,
} from "@aws-sdk/client-bedrock";

const [endpoint, scenario, prefix = "js"] = process.argv.slice(2);
const client = new BedrockClient({ endpoint, region: process.env.AWS_REGION ?? "us-east-1", maxAttempts: 1 });

function jobInput(name) {
  return {
    jobName: name,
    roleArn: "arn:aws:iam::111111111111:role/BedrockBatch",
    modelId: "anthropic.claude-3-haiku-20240307-v1:0",
    inputDataConfig: { s3InputDataConfig: { s3Uri: "s3://team-a-in/records/" } },
    outputDataConfig: { s3OutputDataConfig: { s3Uri: "s3://team-a-out/" } },
  };
}

async function jobs() {
  const arns = [];
  for (const i of [0, 1, 2]) {
    const made = await client.send(new CreateModelInvocationJobCommand(jobInput(`${prefix}-${i}`)));
    arns.push(made.jobArn);
  }
  const got = await client.send(new GetModelInvocationJobCommand({ jobIdentifier: arns[0] }));
  const listed = [];
  const pages = paginateListModelInvocationJobs({ client, pageSize: 1 }, { nameContains: prefix });
  for await (const page of pages) {
    listed.push(...page.invocationJobSummaries.map((j) => j.jobArn));
  }
  await client.send(new TagResourceCommand({ resourceARN: arns[1], tags: [{ key: "team", value: "a/b+c=d" }] }));
  const tags = await client.send(new ListTagsForResourceCommand({ resourceARN: arns[1] }));
  await client.send(new StopModelInvocationJobCommand({ jobIdentifier: arns[2] }));
  const stopped = await client.send(new GetModelInvocationJobCommand({ jobIdentifier: arns[2] }));
  return { arns, got: got.jobArn, listed, tags: tags.tags, stopped: stopped.status };
}

async function refused() {
  try {
    await client.send(new GetModelInvocationJobCommand({ jobIdentifier: "aaaaaaaaaaaa" }));
    return { refused: false };
  } catch (err) {
    return { refused: true, name: err.name, status: err.$metadata?.httpStatusCode, message: err.message };
  }
}

// A clock ten minutes slow: AWS answers InvalidSignatureException, and the SDK corrects its
// offset from the response's Date header and retries.
async function skewed() {
  const slow = new BedrockClient({
    endpoint,
    region: process.env.AWS_REGION ?? "us-east-1",
    systemClockOffset: -10 * 60 * 1000,
    maxAttempts: 3,
  });
  const page = await slow.send(new ListModelInvocationJobsCommand({ maxResults: 1 }));
  return { listed: page.invocationJobSummaries.length, offset: slow.config.systemClockOffset };
}

const scenarios = { jobs, refused, skewed };
console.log(JSON.stringify(await scenarios[scenario]()));
