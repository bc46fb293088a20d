"""Requests the API must refuse cleanly (4xx naming what is wrong, never 500), browsers it lets in,
and jobs it will not start, cannot start, or stops: against the real Redis and services."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.metrics import Metrics
from ops_api.app import JOBS, create_api
from ops_api.auth import mint
from ops_api.jobs import JOB_KEY, RUNNING_KEY, JobStore, TrainingJobs, TrainRequest
from tests.conftest import unique_settings

TRAIN = "/api/v1/training/train"


def _calls(settings, requests: list[tuple[str, str, dict]]) -> list[tuple[int, dict, str]]:
    """(status, headers, body text) of each (method, path, aiohttp request kwargs)."""

    async def run():
        out = []
        async with TestClient(TestServer(create_api(settings, Metrics()))) as client:
            for method, path, kwargs in requests:
                headers = {"Authorization": f"Bearer {mint(settings, 'admin', 60)}", **kwargs.pop("headers", {})}
                resp = await client.request(method, path, headers=headers, **kwargs)
                out.append((resp.status, dict(resp.headers), await resp.text()))
        return out

    return asyncio.run(run())


def test_bodies_that_are_not_json_too_big_too_deep_or_with_huge_numbers_get_4xx_saying_so(services, tmp_path):
    settings = unique_settings(tmp_path, api_max_body_bytes=16_384)
    json_type = {"Content-Type": "application/json"}
    results = _calls(settings, [
        ("POST", TRAIN, {"data": "days=30", "headers": {"Content-Type": "text/plain"}}),
        ("POST", TRAIN, {"data": json.dumps({"seed": 1, "pad": "x" * 20_000}), "headers": json_type}),
        ("POST", TRAIN, {"data": "[" * 5_000 + "]" * 5_000, "headers": json_type}),
        ("POST", TRAIN, {"data": '{"days": ' + "9" * 5001 + "}", "headers": json_type}),
        ("POST", "/api/v1/models/promote", {"data": '{"version": ' + "1" * 5001 + "}", "headers": json_type}),
        ("POST", TRAIN, {"data": json.dumps({"days": 10 ** 30}), "headers": json_type}),
        ("POST", TRAIN, {"data": json.dumps({"source": "file", "data_path": "h.csv", "label_column": "y" * 300}),
                         "headers": json_type}),
    ])
    statuses = [status for status, _, _ in results]
    assert statuses == [415, 413, 400, 400, 400, 422, 422], results
    texts = [text for _, _, text in results]
    assert "application/json" in texts[0] and "16384 bytes" in texts[1] and "nested too deeply" in texts[2]
    assert "days" in texts[5] and "label_column" in texts[6]
    # Within the default size limit (1 MiB), a body nested 100,000 levels deep.
    [(status, _, text)] = _calls(unique_settings(tmp_path), [
        ("POST", TRAIN, {"data": "[" * 100_000 + "]" * 100_000, "headers": json_type})])
    assert status == 400 and "nested too deeply" in text


def test_a_burst_of_300_posts_from_one_caller_is_cut_at_the_endpoint_s_rate_limit(services, tmp_path):
    settings = unique_settings(tmp_path)  # the default limit of training requests: 20 a minute
    burst = [("POST", TRAIN, {"json": {"n_estimators": 0}}) for _ in range(300)]
    statuses = [status for status, _, _ in _calls(settings, burst)]
    assert statuses[:20] == [422] * 20 and statuses[20:] == [429] * 280


def test_a_browser_from_a_configured_origin_may_call_and_others_get_no_cors_headers(services, tmp_path):
    settings = unique_settings(tmp_path, cors_origins="https://risk.example.com")
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "Authorization, Content-Type"}
    results = _calls(settings, [
        ("OPTIONS", TRAIN, {"headers": {"Origin": "https://risk.example.com", **preflight}}),
        ("GET", "/info", {"headers": {"Origin": "https://risk.example.com"}}),
        ("OPTIONS", TRAIN, {"headers": {"Origin": "https://evil.example.net", **preflight}}),
        ("GET", "/info", {"headers": {"Origin": "https://evil.example.net"}}),
    ])
    (ok_status, ok_headers, _), (_, get_headers, _), (bad_status, bad_headers, _), (_, bad_get, _) = results
    assert ok_status == 200 and ok_headers["Access-Control-Allow-Origin"] == "https://risk.example.com"
    assert "AUTHORIZATION" in ok_headers["Access-Control-Allow-Headers"].upper()
    assert get_headers["Access-Control-Allow-Origin"] == "https://risk.example.com"
    assert bad_status == 403 and "Access-Control-Allow-Origin" not in bad_headers
    assert "Access-Control-Allow-Origin" not in bad_get


def test_past_the_concurrent_job_limit_a_new_job_gets_429_with_retry_after(services, tmp_path):
    settings = unique_settings(tmp_path, max_concurrent_jobs=1)
    json_type = {"Content-Type": "application/json"}
    small = json.dumps({"customers": 50, "terminals": 100, "days": 7, "promote": False})
    results = _calls(settings, [
        ("POST", TRAIN, {"data": small, "headers": json_type}),
        ("POST", TRAIN, {"data": small, "headers": json_type}),
        ("POST", "/api/v1/training/hyperparameter-tuning", {"data": "{}", "headers": json_type}),
    ])
    assert [status for status, _, _ in results] == [202, 429, 429], results
    assert results[1][1]["Retry-After"] == "30" and "1 jobs are running" in results[1][2]


def test_job_requests_sent_at_once_start_no_more_jobs_than_the_limit(services, tmp_path):
    settings = unique_settings(tmp_path, max_concurrent_jobs=2)
    small = {"customers": 50, "terminals": 100, "days": 7, "promote": False}

    async def run():
        async with TestClient(TestServer(create_api(settings, Metrics()))) as client:
            headers = {"Authorization": f"Bearer {mint(settings, 'admin', 60)}"}
            answers = await asyncio.gather(*(client.post(TRAIN, json=small, headers=headers) for _ in range(6)))
            return sorted(answer.status for answer in answers)

    assert asyncio.run(run()) == [202, 202, 429, 429, 429, 429]


def test_replicas_of_one_deployment_share_its_job_limit_and_a_dead_replicas_slot_lapses(services, tmp_path):
    settings = unique_settings(tmp_path, max_concurrent_jobs=1)
    small = {"customers": 50, "terminals": 100, "days": 7, "promote": False}
    slots = RUNNING_KEY.format(settings.app_id)

    async def run():
        replicas = [TestClient(TestServer(create_api(settings, Metrics()))) for _ in range(2)]
        for replica in replicas:
            await replica.start_server()
        try:
            headers = {"Authorization": f"Bearer {mint(settings, 'admin', 60)}"}
            first = await replicas[0].post(TRAIN, json=small, headers=headers)
            second = await replicas[1].post(TRAIN, json=small, headers=headers)
            status = await (await replicas[1].get("/status", headers=headers)).json()
            job = (await first.json())["job_id"]
            await replicas[0].post(f"/api/v1/training/jobs/{job}/cancel", headers=headers)
            for _ in range(100):  # the cancelled job's process ends and gives its slot back
                if not await replicas[0].app[JOBS].running():
                    break
                await asyncio.sleep(0.1)
            # A replica that died holding a slot: its lease lapsed a second ago.
            await replicas[0].app[JOBS].redis.zadd(slots, {"dead-replica-job": time.time() - 1})
            third = await replicas[1].post(TRAIN, json=small, headers=headers)
            return first.status, second.status, status["jobs"], third.status
        finally:
            for replica in replicas:
                await replica.close()

    first, second, jobs, third = asyncio.run(run())
    assert (first, second) == (202, 429), "the second replica counts the first one's job"
    assert jobs == {"running": 1, "max_concurrent": 1}
    assert third == 202, "the cancelled job's slot was given back and the dead replica's has lapsed"


def test_query_parameters_out_of_range_or_of_any_length_get_400_naming_them(services, tmp_path):
    settings = unique_settings(tmp_path)
    huge = "9" * 5001
    results = _calls(settings, [
        ("GET", f"/api/v1/training/jobs?limit={huge}", {}), ("GET", "/api/v1/training/jobs?limit=0", {}),
        ("GET", "/api/v1/training/jobs?limit=-1", {}), ("GET", f"/api/v1/training/experiments?runs={huge}", {}),
        ("GET", "/api/v1/training/experiments?runs=101", {}),
    ])
    assert [status for status, _, _ in results] == [400] * 5, results
    assert all("query parameter" in text and ("limit" in text or "runs" in text) for _, _, text in results)


def test_a_job_whose_process_cannot_start_is_failed_with_the_reason_not_left_queued(services, tmp_path):
    import redis.asyncio as aioredis

    settings = unique_settings(tmp_path)

    async def run():
        client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
        broken = {"BROKEN": "a\x00b"}  # no process starts with this environment
        jobs = TrainingJobs(client, env=broken, app_id=settings.app_id)
        job = await jobs.start(TrainRequest())
        for _ in range(100):
            record = await jobs.get(job["job_id"])
            if record["status"] != "queued":
                break
            await asyncio.sleep(0.05)
        await jobs.close()
        await client.aclose()
        return record

    record = asyncio.run(run())
    assert record["status"] == "failed" and "could not start" in record["error"], record


def test_cancelling_a_running_job_stops_its_process_and_it_stays_cancelled(services, tmp_path):
    settings = unique_settings(tmp_path)
    json_type = {"Content-Type": "application/json"}

    async def run():
        async with TestClient(TestServer(create_api(settings, Metrics()))) as client:
            headers = {"Authorization": f"Bearer {mint(settings, 'ml-engineer', 60)}", **json_type}
            job = await (await client.post(TRAIN, headers=headers, data=json.dumps(
                {"customers": 5000, "terminals": 10000, "days": 120, "promote": False}))).json()
            jobs = client.server.app[JOBS]
            for _ in range(200):  # until its process runs
                if job["job_id"] in jobs._processes:
                    break
                await asyncio.sleep(0.05)
            process = jobs._processes[job["job_id"]]
            cancel = f"/api/v1/training/jobs/{job['job_id']}/cancel"
            cancelled = await client.post(cancel, headers=headers)
            body = await cancelled.json()
            await asyncio.sleep(1)
            after = await (await client.get(f"/api/v1/training/jobs/{job['job_id']}", headers=headers)).json()
            again = await client.post(cancel, headers=headers)
            missing = await client.post("/api/v1/training/jobs/no-such-job/cancel", headers=headers)
            return cancelled.status, body, process.returncode, after, again.status, missing.status

    status, body, returncode, after, again, missing = asyncio.run(run())
    assert status == 200 and body["status"] == "cancelled"
    assert returncode is not None, "the job's process still runs"
    assert after["status"] == "cancelled"
    assert (again, missing) == (409, 404)


def test_a_job_cancelled_from_another_api_replica_ends_at_its_next_progress_report(services, tmp_path):
    settings = unique_settings(tmp_path)
    store = JobStore(settings.redis_url)
    key = JOB_KEY.format(f"test-{tmp_path.name}")
    store.redis.set(key, json.dumps({"status": "cancelled"}), ex=60)
    with pytest.raises(SystemExit, match="cancelled"):
        store.update(f"test-{tmp_path.name}", progress=0.5, message="features")
    assert json.loads(store.redis.get(key)) == {"status": "cancelled"}


def test_status_and_dependencies_answer_from_one_round_of_checks_per_interval_and_name_a_dependency_down(
        services, tmp_path):
    up = unique_settings(tmp_path)
    down = unique_settings(tmp_path, mlflow_uri="http://127.0.0.1:9")  # nothing listens on the discard port
    first, second, status = [r for r in _calls(up, [("GET", "/status/dependencies", {}),
                                                    ("GET", "/status/dependencies", {}), ("GET", "/status", {})])]
    assert all(code == 200 for code, _, _ in (first, second, status))
    deps = json.loads(first[2])
    assert {name: d["up"] for name, d in deps["dependencies"].items()} == {
        "kafka": True, "schema_registry": True, "redis": True, "mlflow": True}
    assert all(d["latency_ms"] >= 0 and d["last_error"] is None for d in deps["dependencies"].values())
    assert json.loads(second[2])["checked_at"] == deps["checked_at"], "checked again within the interval"
    body = json.loads(status[2])
    assert body["role"] == "api" and body["auth"]["mode"] == "jwt" and body["jobs"]["max_concurrent"] == 2
    assert body["dependencies"]["mlflow"] is True
    [(code, _, text)] = _calls(down, [("GET", "/status/dependencies", {})])
    mlflow = json.loads(text)["dependencies"]["mlflow"]
    assert code == 200 and mlflow["up"] is False and mlflow["last_error"]["error"]


def test_every_answer_carries_a_request_id_the_caller_s_when_it_is_sane(services, tmp_path):
    settings = unique_settings(tmp_path)
    results = _calls(settings, [("GET", "/info", {"headers": {"X-Request-ID": "pay-123"}}),
                                ("GET", "/info", {"headers": {"X-Request-ID": "bad id\twith tabs"}}),
                                ("GET", "/nowhere", {})])
    ids = [headers["X-Request-ID"] for _, headers, _ in results]
    assert ids[0] == "pay-123"
    assert ids[1] != "bad id\twith tabs" and len(ids[1]) == 32 and len(ids[2]) == 32 and ids[1] != ids[2]


def test_past_its_rate_limit_a_token_gets_429_with_retry_after_on_every_replica_sharing_redis(services, tmp_path):
    settings = unique_settings(tmp_path, rate_limit_read="3/minute")
    token = {"Authorization": f"Bearer {mint(settings, 'viewer', 60, subject='limited')}"}

    async def run():
        statuses, refused = [], None
        async with TestClient(TestServer(create_api(settings, Metrics()))) as one, \
                TestClient(TestServer(create_api(settings, Metrics()))) as other:
            for client in (one, one, one, one, other):
                resp = await client.get("/info", headers=token)
                statuses.append(resp.status)
                if resp.status == 429:
                    refused = (dict(resp.headers), await resp.json())
            other_endpoint = (await one.get("/status/dependencies", headers=token)).status
        return statuses, refused, other_endpoint

    statuses, (headers, body), other_endpoint = asyncio.run(run())
    assert statuses == [200, 200, 200, 429, 429], "the second replica counts the same window"
    assert 1 <= int(headers["Retry-After"]) <= 60 and headers["X-RateLimit-Limit"] == "3"
    assert headers["X-RateLimit-Remaining"] == "0" and "rate limit of 3" in body["error"]["message"]
    assert other_endpoint != 429, "each endpoint has its own count"


def test_with_authentication_disabled_a_client_address_is_still_rate_limited(services, tmp_path):
    settings = unique_settings(tmp_path, rate_limit_read="3/minute", auth="disabled")

    async def run():
        async with TestClient(TestServer(create_api(settings, Metrics()))) as client:
            return [(await client.get("/info")).status for _ in range(5)]

    assert asyncio.run(run()) == [200, 200, 200, 429, 429]


def test_with_redis_down_requests_are_still_served_limited_per_process_and_health_says_degraded(services, tmp_path):
    settings = unique_settings(tmp_path, rate_limit_read="3/minute", redis_url="redis://127.0.0.1:9/0")
    token = {"Authorization": f"Bearer {mint(settings, 'viewer', 60)}"}

    async def run():
        async with TestClient(TestServer(create_api(settings, Metrics()))) as client:
            statuses = [(await client.get("/info", headers=token)).status for _ in range(4)]
            health = await (await client.get("/health", headers=token)).json()
        return statuses, health

    statuses, health = asyncio.run(run())
    assert statuses == [200, 200, 200, 429]
    assert health["components"]["rate_limits"]["status"] == "degraded"
    assert health["components"]["rate_limits"]["counted"] == "per process" and health["status"] == "degraded"


def test_the_api_describes_every_route_in_a_valid_openapi_3_1_document_served_without_a_token(services, tmp_path):
    from openapi_spec_validator import validate

    settings = unique_settings(tmp_path)

    async def run():
        app = create_api(settings, Metrics())
        routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.method not in ("HEAD", "OPTIONS")}
        async with TestClient(TestServer(app)) as client:
            spec = await (await client.get("/openapi.json")).json()
            page = await client.get("/docs")
            script = await client.get("/docs/swagger-ui-bundle.js")  # no token: the page's own assets are open
            assets = (script.status, script.content_type, "SwaggerUIBundle" in await script.text(),
                      (await client.get("/docs/swagger-ui.css")).status)
            return routes, spec, page.status, page.content_type, await page.text(), assets

    routes, spec, page_status, page_type, page, assets = asyncio.run(run())
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    described = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    assert described == routes
    predict = spec["paths"]["/api/v1/fraud/predict"]["post"]
    assert predict["x-roles"] == ["admin", "analyst"] and "422" in predict["responses"]
    schema = spec["components"]["schemas"][predict["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert {"transaction_id", "customer_id", "terminal_id", "merchant_id", "amount"} <= set(schema["required"])
    assert spec["paths"]["/health/live"]["get"]["security"] == []
    assert spec["paths"]["/api/v1/training/jobs/{job_id}"]["get"]["parameters"][0]["name"] == "job_id"
    assert page_status == 200 and page_type == "text/html" and "POST /api/v1/fraud/predict" in page
    assert "SwaggerUIBundle({url: '/openapi.json'" in page and "/docs/swagger-ui-bundle.js" in page
    assert assets == (200, "text/javascript", True, 200), "Swagger UI's script and style, served by the API"
    assert {"409", "504"} <= set(predict["responses"]), "what predict answers beyond the common errors"
    assert "404" in spec["paths"]["/api/v1/training/jobs/{job_id}"]["get"]["responses"]
    assert "text/html" in spec["paths"]["/docs"]["get"]["responses"]["200"]["content"]
    ready_503 = spec["paths"]["/health/ready"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]
    assert ready_503 == {"$ref": "#/components/schemas/NotReady"}, "not ready answers its usual body, not an Error"
    not_ready = spec["components"]["schemas"]["NotReady"]
    assert not_ready["required"] == ["status", "reasons"]
    verdict = spec["components"]["schemas"]["Verdict"]
    assert {"score", "decision", "model_version", "reasons"} <= set(verdict["required"])
    assert predict["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Verdict"}


def test_a_method_a_route_does_not_take_gets_405_with_the_allowed_methods(services, tmp_path):
    settings = unique_settings(tmp_path)
    [(status, headers, text)] = _calls(settings, [("TRACE", "/api/v1/fraud/drift", {})])
    assert status == 405 and "GET" in headers.get("Allow", "").split(","), (headers, text)
    assert json.loads(text)["error"]["status"] == 405


def test_each_transaction_of_a_batch_counts_against_the_predict_rate_limit(services, tmp_path):
    settings = unique_settings(tmp_path, rate_limit_predict="5/minute")
    refused = {"transaction_id": "t", "customer_id": "C", "terminal_id": "T", "merchant_id": "M", "amount": -1}
    json_type = {"Content-Type": "application/json"}
    batch = json.dumps({"transactions": [refused] * 3})
    results = _calls(settings, [
        ("POST", "/api/v1/fraud/predict/batch", {"data": batch, "headers": json_type}),
        ("POST", "/api/v1/fraud/predict/batch", {"data": batch, "headers": json_type}),
    ])
    (first, _, first_text), (second, headers, text) = results
    assert first == 200 and [r["status"] for r in json.loads(first_text)["results"]] == [422] * 3
    assert second == 429 and headers["X-RateLimit-Limit"] == "5" and "batch of 3" in text, text


def test_a_job_that_fails_on_a_user_s_file_says_so_without_echoing_what_the_file_holds(services, tmp_path):
    settings = unique_settings(tmp_path)
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / "history.csv").write_text(
        "transaction_id,customer_id,terminal_id,amount,timestamp,is_fraud\n"
        "t1,C1,T1,10.0,ACME-SECRET-42,0\n")

    async def run():
        async with TestClient(TestServer(create_api(settings, Metrics()))) as client:
            headers = {"Authorization": f"Bearer {mint(settings, 'ml-engineer', 60)}"}
            started = await client.post(TRAIN, json={"source": "file", "data_path": "history.csv"}, headers=headers)
            job = await started.json()
            for _ in range(240):
                job = await (await client.get(f"/api/v1/training/jobs/{job['job_id']}", headers=headers)).json()
                if job["status"] in ("succeeded", "failed"):
                    break
                await asyncio.sleep(0.5)
            return started.status, job

    status, job = asyncio.run(run())
    assert status == 202 and job["status"] == "failed", job
    assert "ACME-SECRET-42" not in json.dumps(job) and "could not be used" in job["error"], job
