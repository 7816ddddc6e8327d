--
-- Cascade resolution: registry, cascade_path files, shipped examples,
-- inline definitions; and the errors for bad definitions.
--
SELECT mock('/reset', 'POST') IS NOT NULL AS reset;
-- the registry
SELECT rvbbit.create_cascade('greet', $$
cascade_id: greet
cells:
  - name: hello
    instructions: "Say hello to {{ input.name | upper }}"
$$);
SELECT name, owner, definition LIKE '%Say hello%' AS has_def FROM rvbbit.cascades;
SELECT rvbbit.run('greet', '{"name": "ada"}');
-- replacing keeps one row
SELECT rvbbit.create_cascade('greet', $$
cells:
  - name: hello
    instructions: "Hi {{ input.name }}"
$$);
SELECT rvbbit.run('greet', '{"name": "ada"}');
SELECT count(*) FROM rvbbit.cascades WHERE name = 'greet';
-- a registry definition is validated before it is stored
SELECT rvbbit.create_cascade('broken', 'cells: [ {name: a');
SELECT rvbbit.create_cascade(E'bad\tname', 'cells: [{name: a, instructions: x}]');
SELECT rvbbit.drop_cascade('greet');
SELECT rvbbit.drop_cascade('greet');
SELECT rvbbit.drop_cascade('greet', if_exists => true);

-- files under rvbbit.cascade_path, with or without the suffix, in subdirectories
SELECT rvbbit.run('echo', '{"text": "from a file"}');
SELECT rvbbit.run('echo.yaml', '{"text": "from a file"}');
SELECT rvbbit.run('sub/nested', '{"text": "below"}');
-- nothing may escape the directory
SELECT rvbbit.run('../cascades/echo', '{"text": "x"}');
SELECT rvbbit.run('/etc/passwd', '{"text": "x"}');
SELECT rvbbit.run('escape', '{"text": "x"}');
-- the examples shipped with the extension
SELECT rvbbit.run('extract_brand', '{"product_name": "Apple iPhone 15"}');
SELECT rvbbit.run('classify_sentiment', '{"review_text": "I love it, works great"}');
-- inline YAML
SELECT rvbbit.run($$cells: [{name: shout, instructions: "{{ input.x | upper }}!"}]$$,
                  '{"x": "inline"}');
SELECT rvbbit.validate_cascade($$cells: [{name: a, instructions: "{{ input.x }}"}]$$);

-- errors
SELECT rvbbit.run('no_such_cascade', '{}');
SELECT rvbbit.run('bad_yaml', '{}');
SELECT rvbbit.run('no_cells', '{}');
SELECT rvbbit.run('bad_template', '{}');
SELECT rvbbit.run($$cells: [{name: a, instructions: "{{ input.x | uper }}"}]$$, '{}');
SELECT rvbbit.run($$cells: [{name: a}]$$, '{}');
SELECT rvbbit.run($$cells: [{name: a, instructions: x}, {name: a, instructions: y}]$$, '{}');
SELECT rvbbit.run($$cells: [{name: a, instructions: x, output_schema: {type: strnig}}]$$, '{}');
SELECT rvbbit.run(NULL, '{}');
-- only the five calls that succeeded above reached the provider
SELECT mock('/stats')->'requests' AS http_requests;
