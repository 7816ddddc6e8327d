--
-- Cost accounting: prices, cost per call and per statement, and the
-- per-role daily budget enforced across sessions before a call is sent.
--
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
INSERT INTO rvbbit.model_prices VALUES ('daily/model', 10000, 10000);
-- budgets reserve max_tokens of output per call; these cells set none
SET rvbbit.default_max_tokens = 256;
CREATE ROLE rv_spender LOGIN;
CREATE ROLE rv_free LOGIN;
GRANT rvbbit_user TO rv_spender, rv_free;
-- a daily budget of $0.50 (set per role with ALTER ROLE ... SET in real use);
-- it is kept for the session user, so the session becomes rv_spender
SET rvbbit.budget_dollars_per_day = 0.5;
SET SESSION AUTHORIZATION rv_spender;
CREATE TEMP TABLE spend_results (n int, result jsonb);
DO $$
BEGIN
    FOR n IN 1..6 LOOP
        BEGIN
            INSERT INTO spend_results
            SELECT n, rvbbit.run($y$cells: [{name: a, instructions: "{{ input.text }}", max_tokens: 5}]$y$,
                                 jsonb_build_object('text', 'daily ' || n),
                                 '{"model": "daily/model", "cache": false}');
        EXCEPTION WHEN configuration_limit_exceeded THEN
            RAISE NOTICE 'call %: %', n, SQLERRM;
            INSERT INTO spend_results VALUES (n, NULL);
        END;
    END LOOP;
END
$$;
SELECT n, result FROM spend_results ORDER BY n;
-- the refused calls were not sent
SELECT count(*) AS calls_sent FROM rvbbit.calls WHERE model = 'daily/model';
-- the error a user sees
SELECT rvbbit.run($y$cells: [{name: a, instructions: "{{ input.text }}", max_tokens: 5}]$y$,
                  '{"text": "one more"}', '{"model": "daily/model", "cache": false}');
RESET SESSION AUTHORIZATION;
SELECT mock('/stats')->'requests' AS http_requests;
-- another role has its own budget for the day
SET SESSION AUTHORIZATION rv_free;
SELECT rvbbit.run($y$cells: [{name: a, instructions: "{{ input.text }}", max_tokens: 5}]$y$,
                  '{"text": "free"}', '{"model": "daily/model", "cache": false}');
RESET SESSION AUTHORIZATION;
RESET rvbbit.budget_dollars_per_day;
-- a user cannot lift their own budget
SET SESSION AUTHORIZATION rv_spender;
SET rvbbit.budget_dollars_per_day = 1000;
RESET SESSION AUTHORIZATION;

-- cost per call, per statement, per role/cascade/model
SELECT role, model, status, round(cost::numeric, 4) AS cost, input_tokens, output_tokens
  FROM rvbbit.calls WHERE model = 'daily/model' ORDER BY id;
SELECT role, calls, cache_hits, errors, cost > 0 AS has_cost, models
  FROM rvbbit.statement_costs WHERE models = 'daily/model' ORDER BY first_call;
SELECT role, cascade, model, calls, round(cost, 4) AS cost FROM rvbbit.stats
 WHERE model = 'daily/model' ORDER BY role;
DROP TABLE spend_results;
DROP ROLE rv_spender, rv_free;
